//! `latchkey-bench`: every benchmark of latchkey against oauth2-rs and the floor, in one run,
//! printed as one table and written to `target/bench-report.md`.
//!
//! ```text
//! cargo run --release -p latchkey-bench [-- --quick] [-- --no-builds]
//! ```
//!
//! `--quick` shortens every measurement (a smoke run, not for publishing); `--no-builds`
//! skips the clean release builds, which take minutes. `e2e [--quick]` runs the end-to-end
//! measurement alone, `refresh [--quick]` the one after the login, `id-token [--quick]`
//! the ID token verification against `jsonwebtoken`, `redis [--quick]` logins and
//! refreshes shared by replicas through Redis against in memory, `device [--quick]` the
//! polls of a device login (RFC 8628) against oauth2-rs's device flow, `waiters [--quick]`
//! 1,000 callers waiting on one refresh against oauth2-rs behind a `tokio::sync::Mutex`.
//! `serve TARGET TOKEN_URL` is the callback server the end-to-end measurement runs in child
//! processes, `refresh-client CLIENT TOKEN_URL COUNT` the client the refresh measurement
//! runs.
#![forbid(unsafe_code)]
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::{Command, ExitCode};

use latchkey_bench::e2e::{self, Plan};
use latchkey_bench::fixtures::Operation;
use latchkey_bench::footprint::{self, workspace_root};
use latchkey_bench::refresh::{self, Client};
use latchkey_bench::report::{Allocs, Report, WaitersHeap};
use latchkey_bench::servers::{self, Target};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["serve", target, token_url] => {
            let Some(target) = Target::parse(target) else {
                eprintln!("serve: unknown target {target:?}");
                return ExitCode::from(2);
            };
            match servers::serve(target, token_url) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("serve {}: {error}", target.name());
                    ExitCode::FAILURE
                }
            }
        }
        ["refresh-client", client, token_url, count] => {
            let (Some(client), Ok(count)) = (Client::parse(client), count.parse()) else {
                eprintln!("refresh-client: unknown client {client:?} or count {count:?}");
                return ExitCode::from(2);
            };
            match refresh::client(client, token_url, count) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("refresh-client {}: {error}", client.name());
                    ExitCode::FAILURE
                }
            }
        }
        ["e2e", ref rest @ ..] if rest.iter().all(|arg| *arg == "--quick") => {
            report_failure(end_to_end_only(!rest.is_empty()))
        }
        ["refresh", ref rest @ ..] if rest.iter().all(|arg| *arg == "--quick") => {
            report_failure(refresh_only(!rest.is_empty()))
        }
        ["id-token", ref rest @ ..] if rest.iter().all(|arg| *arg == "--quick") => {
            report_failure(id_token_only(!rest.is_empty()))
        }
        ["signing", ref rest @ ..] if rest.iter().all(|arg| *arg == "--quick") => {
            report_failure(signing_only(!rest.is_empty()))
        }
        ["redis", ref rest @ ..] if rest.iter().all(|arg| *arg == "--quick") => {
            report_failure(shared_only(!rest.is_empty()))
        }
        ["device", ref rest @ ..] if rest.iter().all(|arg| *arg == "--quick") => {
            report_failure(device_only(!rest.is_empty()))
        }
        ["waiters", ref rest @ ..] if rest.iter().all(|arg| *arg == "--quick") => {
            report_failure(waiters_only(!rest.is_empty()))
        }
        _ if args
            .iter()
            .all(|arg| matches!(*arg, "--quick" | "--no-builds")) =>
        {
            let quick = args.contains(&"--quick");
            let builds = !args.contains(&"--no-builds");
            report_failure(run(quick, builds))
        }
        _ => {
            eprintln!(
                "usage: latchkey-bench [--quick] [--no-builds] | e2e [--quick] | refresh [--quick] \
                 | id-token [--quick] | signing [--quick] | redis [--quick] | device [--quick] \
                 | waiters [--quick]"
            );
            ExitCode::from(2)
        }
    }
}

fn report_failure(result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("latchkey-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

fn run(quick: bool, builds: bool) -> Result<(), Error> {
    let root = workspace_root();
    // Taken now: the nested builds below may replace this very file, and the path of a
    // replaced executable reads "… (deleted)" afterwards.
    let program = std::env::current_exe()?;
    let mut report = Report {
        machine: machine(),
        ..Report::default()
    };
    progress(&format!("machine: {}", report.machine));

    progress("in process: criterion (cargo bench -p latchkey-bench --bench inprocess)");
    let criterion_home = root.join("target/bench/criterion");
    let mut bench = cargo();
    bench
        .args([
            "bench",
            "-p",
            "latchkey-bench",
            "--bench",
            "inprocess",
            "--",
            "--noplot",
        ])
        .env("CRITERION_HOME", &criterion_home)
        .current_dir(&root);
    if quick {
        bench.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
    }
    check(bench.status()?, "cargo bench")?;
    for operation in Operation::ALL {
        let median = criterion_median(&criterion_home, operation.name())?;
        report.medians.insert(operation.name().to_owned(), median);
    }

    progress("allocations, memory and the waiters' heap: the probe");
    read_probe(&probe(&program, &[])?, &mut report)?;

    report.e2e = end_to_end(quick, &program)?;
    report.refresh = after_the_login(quick, &program)?;
    report.id_tokens = id_tokens(quick)?;
    report.signing = signing(quick)?;
    report.shared = Some(shared(quick)?);
    report.device = Some(device(quick)?);
    report.waiters = Some(waiters(quick)?);

    report.footprint = footprint::measure(builds, &mut |line| progress(line))?;

    let markdown = report.markdown();
    println!("{markdown}");
    let path = root.join("target/bench-report.md");
    std::fs::write(&path, &markdown)?;
    progress(&format!("written to {}", path.display()));
    Ok(())
}

/// The end-to-end measurement alone (for working on the drivers).
fn end_to_end_only(quick: bool) -> Result<(), Error> {
    let report = Report {
        machine: machine(),
        e2e: end_to_end(quick, &std::env::current_exe()?)?,
        ..Report::default()
    };
    println!("{}", report.markdown());
    Ok(())
}

/// The measurement after the login alone.
fn refresh_only(quick: bool) -> Result<(), Error> {
    let report = Report {
        machine: machine(),
        refresh: after_the_login(quick, &std::env::current_exe()?)?,
        ..Report::default()
    };
    println!("{}", report.markdown());
    Ok(())
}

/// Logins through Redis against in memory, alone.
fn shared_only(quick: bool) -> Result<(), Error> {
    let report = Report {
        machine: machine(),
        shared: Some(shared(quick)?),
        ..Report::default()
    };
    println!("{}", report.markdown());
    Ok(())
}

/// The device login's polls alone.
fn device_only(quick: bool) -> Result<(), Error> {
    let report = Report {
        machine: machine(),
        device: Some(device(quick)?),
        ..Report::default()
    };
    println!("{}", report.markdown());
    Ok(())
}

/// Device logins: in process 10 rounds of 2,000 logins of 10 polls per side, over loopback
/// 5 rounds of 50 logins side by side of 3 polls (3 of 200, 2 of 20 when quick).
fn device(quick: bool) -> Result<latchkey_bench::device::DeviceResult, Error> {
    use latchkey_bench::device::DevicePlan;
    progress("device logins: polls of the token endpoint, latchkey against oauth2-rs");
    let plan = if quick {
        DevicePlan {
            rounds: 3,
            logins: 200,
            rounds_end_to_end: 2,
            logins_end_to_end: 20,
        }
    } else {
        DevicePlan {
            rounds: 10,
            logins: 2_000,
            rounds_end_to_end: 5,
            logins_end_to_end: 50,
        }
    };
    latchkey_bench::device::measure(plan, &mut |line| progress(line))
}

/// 1,000 callers waiting on one refresh, alone, with the probe's heap figures.
fn waiters_only(quick: bool) -> Result<(), Error> {
    let mut report = Report {
        machine: machine(),
        waiters: Some(waiters(quick)?),
        ..Report::default()
    };
    progress("1,000 callers waiting on one refresh: heap, in the probe");
    let program = std::env::current_exe()?;
    read_probe(&probe(&program, &["waiters"])?, &mut report)?;
    println!("{}", report.markdown());
    Ok(())
}

/// Builds the probe (it sits beside `program`) and runs it with `args`; its output.
fn probe(program: &Path, args: &[&str]) -> Result<String, Error> {
    check(
        cargo()
            .args([
                "build",
                "--release",
                "-p",
                "latchkey-bench",
                "--bin",
                "probe",
            ])
            .current_dir(workspace_root())
            .status()?,
        "cargo build --bin probe",
    )?;
    let output = Command::new(program.with_file_name("probe"))
        .args(args)
        .output()?;
    check(output.status, "probe")?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// 1,000 callers waiting on one refresh: 15 rounds per side (3 when quick).
fn waiters(quick: bool) -> Result<latchkey_bench::waiters::WaitersResult, Error> {
    progress("1,000 callers waiting on one refresh: latchkey against oauth2-rs + a mutex");
    let rounds = if quick { 3 } else { 15 };
    latchkey_bench::waiters::measure(rounds, &mut |line| progress(line))
}

fn shared(quick: bool) -> Result<latchkey_bench::shared::SharedResult, Error> {
    progress("logins and refreshes shared by replicas: Redis against in memory");
    let (rounds, count, pending) = if quick {
        (3, 100, 500)
    } else {
        (7, 1_000, 10_000)
    };
    latchkey_bench::shared::measure(rounds, count, pending)
}

/// The ID token verification alone.
fn id_token_only(quick: bool) -> Result<(), Error> {
    let report = Report {
        machine: machine(),
        id_tokens: id_tokens(quick)?,
        ..Report::default()
    };
    println!("{}", report.markdown());
    Ok(())
}

/// The DPoP proofs and client assertions alone.
fn signing_only(quick: bool) -> Result<(), Error> {
    let report = Report {
        machine: machine(),
        signing: signing(quick)?,
        ..Report::default()
    };
    println!("{}", report.markdown());
    Ok(())
}

/// Proofs and assertions: 10 rounds of 2,000 per contender and job (3 of 200 when quick).
fn signing(quick: bool) -> Result<Vec<latchkey_bench::signing::SigningResult>, Error> {
    let (rounds, iterations) = if quick { (3, 200) } else { (10, 2_000) };
    Ok(latchkey_bench::signing::run(
        rounds,
        iterations,
        &mut |line| progress(line),
    )?)
}

/// ID token verifications: 10 rounds of 2,000 per contender and algorithm (3 of 200 when
/// quick).
fn id_tokens(quick: bool) -> Result<Vec<latchkey_bench::id_token::AlgorithmResult>, Error> {
    let (rounds, iterations) = if quick { (3, 200) } else { (10, 2_000) };
    Ok(latchkey_bench::id_token::run(
        rounds,
        iterations,
        &mut |line| progress(line),
    )?)
}

/// Refreshes and hand-outs: 10 rounds of 1,000 each per client (3 of 100 when quick).
fn after_the_login(quick: bool, program: &Path) -> Result<Vec<refresh::ClientResult>, Error> {
    let (rounds, count) = if quick { (3, 100) } else { (10, 1_000) };
    Ok(refresh::run(rounds, count, program, &mut |line| {
        progress(line)
    })?)
}

fn end_to_end(quick: bool, program: &Path) -> Result<Vec<e2e::TargetResult>, Error> {
    let plan = if quick { Plan::QUICK } else { Plan::FULL };
    let run = e2e::run(plan, program, &mut |line| progress(line))?;
    let flows: usize = run
        .targets
        .iter()
        .map(|t| t.sequential.flows + t.concurrent.flows)
        .sum();
    if run.token_requests != flows as u64 {
        return Err(format!(
            "{flows} flows succeeded but the token endpoint answered {} requests",
            run.token_requests
        )
        .into());
    }
    Ok(run.targets)
}

fn progress(line: &str) {
    eprintln!("latchkey-bench: {line}");
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn check(status: std::process::ExitStatus, what: &str) -> Result<(), Error> {
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})").into())
    }
}

/// The median criterion estimated for `name` (`group/function`), in nanoseconds.
fn criterion_median(home: &Path, name: &str) -> Result<f64, Error> {
    let path = home.join(name).join("new/estimates.json");
    let text =
        std::fs::read_to_string(&path).map_err(|error| format!("{}: {error}", path.display()))?;
    let estimates: serde_json::Value = serde_json::from_str(&text)?;
    estimates["median"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| format!("{}: no median", path.display()).into())
}

/// Reads the probe's JSON lines into the report.
fn read_probe(output: &str, report: &mut Report) -> Result<(), Error> {
    for line in output.lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        let name = value["name"].as_str().unwrap_or_default().to_owned();
        match value["kind"].as_str() {
            Some("allocs") => {
                let allocs = Allocs {
                    allocations: value["allocations"].as_f64().unwrap_or_default(),
                    reallocations: value["reallocations"].as_f64().unwrap_or_default(),
                };
                report.allocs.insert(name, allocs);
            }
            Some("waiters") => {
                let number = |field: &str| value[field].as_f64().unwrap_or_default();
                report.waiters_heap.push(WaitersHeap {
                    name,
                    callers: number("callers"),
                    waiting_bytes: number("waiting_bytes"),
                    allocations: number("allocations"),
                    bytes: number("bytes"),
                });
            }
            Some("memory") => {
                let bytes = value["bytes_per_flow"].as_f64().unwrap_or_default();
                report
                    .memory
                    .push((name, bytes, value["peak_rss_kib"].as_u64()));
            }
            _ => return Err(format!("unexpected probe line {line:?}").into()),
        }
    }
    Ok(())
}

/// CPU, cores, memory, kernel and compiler, in one line.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {:.0} GiB, Linux {kernel}, {rustc}",
        memory_kib as f64 / 1024.0 / 1024.0
    )
}
