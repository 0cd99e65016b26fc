//! In-process timings (criterion): latchkey's core, its floors and oauth2-rs on the exact
//! recorded bytes. Each operation is defined once, in `latchkey_bench::fixtures`, and runs in
//! batches on a long-lived engine; only the operation itself is timed.
//!
//! `cargo bench -p latchkey-bench --bench inprocess`; `cargo run --release -p latchkey-bench`
//! runs it and puts the medians into its table.
#![forbid(unsafe_code)]
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_bench::fixtures::{Bench, Operation, Timer};

fn inprocess(c: &mut Criterion) {
    let mut bench = Bench::new();
    for operation in Operation::ALL {
        let (group, contender) = operation
            .name()
            .split_once('/')
            .expect("names are group/contender");
        c.benchmark_group(group).bench_function(contender, |b| {
            b.iter_custom(|iters| {
                let mut timer = Timer::default();
                operation.measure(&mut bench, iters, &mut timer);
                timer.elapsed
            });
        });
    }
}

criterion_group!(benches, inprocess);
criterion_main!(benches);
