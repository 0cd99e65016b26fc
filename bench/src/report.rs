//! The one table: every figure of a run, the ratios between contenders measured in that
//! same run, and whether each target is met. Rendered as Markdown, printed and written to
//! `target/bench-report.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::device::{DeviceResult, POLLS, POLLS_END_TO_END};
use crate::e2e::{ModeResult, TargetResult};
use crate::footprint::Footprint;
use crate::id_token::{AlgorithmResult, CONTENDERS};
use crate::refresh::{self, Client, ClientResult};
use crate::servers::Target;
use crate::waiters::{REFRESH_DELAY, WaitersResult};

/// Allocations of one operation, per run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocs {
    /// `malloc`s.
    pub allocations: f64,
    /// `realloc`s.
    pub reallocations: f64,
}

/// The heap of one side of the waiters' measurement, from the probe.
#[derive(Debug, Clone, Default)]
pub struct WaitersHeap {
    /// The side (`latchkey`, `oauth2-rs`).
    pub name: String,
    /// Callers in the batch.
    pub callers: f64,
    /// Heap held while every caller waits, more than before they were spawned.
    pub waiting_bytes: f64,
    /// Allocations and reallocations over the batch.
    pub allocations: f64,
    /// Bytes allocated over the batch.
    pub bytes: f64,
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// The machine, one line.
    pub machine: String,
    /// Criterion medians in nanoseconds, by `group/contender`.
    pub medians: BTreeMap<String, f64>,
    /// Allocations per run, by `group/contender`.
    pub allocs: BTreeMap<String, Allocs>,
    /// Heap bytes per pending flow, and the peak RSS (KiB) of the process holding them, by
    /// what was measured.
    pub memory: Vec<(String, f64, Option<u64>)>,
    /// End-to-end results per target.
    pub e2e: Vec<TargetResult>,
    /// Footprints.
    pub footprint: Vec<Footprint>,
    /// CPU per refresh and per hand-out, per contender.
    pub refresh: Vec<ClientResult>,
    /// CPU per ID token verification, per algorithm and contender.
    pub id_tokens: Vec<AlgorithmResult>,
    /// CPU per DPoP proof and client assertion, per job and contender.
    pub signing: Vec<crate::signing::SigningResult>,
    /// Logins and refreshes through Redis against in memory.
    pub shared: Option<crate::shared::SharedResult>,
    /// CPU per poll of a device login, latchkey against oauth2-rs.
    pub device: Option<DeviceResult>,
    /// 1,000 callers waiting on one refresh, latchkey against oauth2-rs behind a mutex.
    pub waiters: Option<WaitersResult>,
    /// Their heap, per side, from the probe.
    pub waiters_heap: Vec<WaitersHeap>,
}

/// One target's verdict.
struct Verdict {
    target: String,
    measured: String,
    met: Option<bool>,
}

impl Report {
    fn median(&self, name: &str) -> Option<f64> {
        self.medians.get(name).copied()
    }

    fn e2e(&self, target: Target) -> Option<&TargetResult> {
        self.e2e.iter().find(|result| result.target == target)
    }

    /// The report in Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Machine: {}\n", self.machine);
        self.in_process(&mut out);
        self.memory_section(&mut out);
        self.end_to_end(&mut out);
        self.refresh_section(&mut out);
        self.waiters_section(&mut out);
        self.device_section(&mut out);
        self.id_token_section(&mut out);
        self.signing_section(&mut out);
        self.shared_section(&mut out);
        self.footprint_section(&mut out);
        self.targets(&mut out);
        out
    }

    fn shared_section(&self, out: &mut String) {
        let Some(shared) = &self.shared else {
            return;
        };
        let _ = writeln!(
            out,
            "### Logins shared by replicas: Redis against in memory (tokio service, one process)\n\n\
             CPU is this process's less the local token endpoint's (a thread of its own). \
             redis-server is the tests' (`appendonly yes`, `appendfsync always`: an fsync per \
             write), which counts in its CPU and in the latency.\n\n\
             | per login | in memory | through Redis | ratio (medians) | rounds' range, µs (memory / Redis) |\n\
             |---|---|---|---|---|"
        );
        arm_rows(
            out,
            &[
                (
                    "CPU of the backend, µs",
                    &shared.memory_cpu,
                    &shared.redis_cpu,
                ),
                (
                    "latency (median login), µs",
                    &shared.memory_latency,
                    &shared.redis_latency,
                ),
            ],
            &shared.server_cpu,
        );
        let _ = writeln!(
            out,
            "\nRedis memory per pending flow (sealed record, key, expiry): {:.0} B.\n",
            shared.redis_bytes_per_pending
        );
        let refresh = &shared.refresh;
        if refresh.memory_cpu.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "### Refreshes shared by replicas: Redis against in memory (token source on tokio, one process)\n\n\
             `TokenSource::refresh()` one after another at the same local token endpoint. In \
             memory: the request, then the tokens stored. Through Redis (a store replicas \
             share, so one refreshes at a time): the refresh lock taken, the stored tokens read \
             again under it, the request, the tokens sealed and saved under the lock's fence, \
             the lock released, each store step on the blocking pool. CPU is this process's \
             less the token endpoint's.\n\n\
             | per refresh | in memory | through Redis | ratio (medians) | rounds' range, µs (memory / Redis) |\n\
             |---|---|---|---|---|"
        );
        arm_rows(
            out,
            &[
                (
                    "CPU of the client, µs",
                    &refresh.memory_cpu,
                    &refresh.redis_cpu,
                ),
                (
                    "latency (median refresh), µs",
                    &refresh.memory_latency,
                    &refresh.redis_latency,
                ),
            ],
            &refresh.server_cpu,
        );
        out.push('\n');
    }

    fn waiters_section(&self, out: &mut String) {
        let Some(waiters) = &self.waiters else {
            return;
        };
        let (ours, theirs) = (&waiters.latchkey, &waiters.oauth2);
        let _ = writeln!(
            out,
            "### {callers} callers waiting on one refresh (tokio, 2 worker threads; {rounds} rounds)\n\n\
             {callers} tasks ask for tokens at once while the stored ones have expired. latchkey: \
             `TokenSource::tokens()` over a memory store (the first call starts the refresh, the \
             others join it and are woken once the fresh tokens are stored). oauth2-rs: the \
             tokens behind a `tokio::sync::Mutex`, the first caller refreshing under the lock \
             (`exchange_refresh_token` with reqwest), the others taking the lock in turn and \
             cloning the fresh tokens out. The local token endpoint answers the refresh after \
             {delay} ms, so that every caller arrives while it is in flight; its CPU is \
             subtracted. CPU includes spawning the tasks; ratios are medians of per-round \
             ratios, the sides alternating round by round.\n\n\
             | per batch | latchkey | oauth2-rs + Mutex | latchkey / oauth2-rs | rounds' range (latchkey; oauth2-rs) |\n\
             |---|---|---|---|---|",
            callers = grouped(waiters.callers as f64),
            rounds = ours.cpu.len(),
            delay = REFRESH_DELAY.as_millis(),
        );
        let _ = writeln!(
            out,
            "| refresh requests the token endpoint saw | {} | {} | — | — |",
            refreshes_text(&ours.refreshes),
            refreshes_text(&theirs.refreshes),
        );
        for (what, ours, theirs) in [
            ("CPU of the process", &ours.cpu, &theirs.cpu),
            (
                "wall time until every caller has tokens",
                &ours.wall,
                &theirs.wall,
            ),
            (
                "of which after the endpoint answered",
                &ours.tail,
                &theirs.tail,
            ),
        ] {
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {}; {} |",
                long_time(refresh::median(ours)),
                long_time(refresh::median(theirs)),
                ratio_text(round_ratio(ours, theirs)),
                long_range(ours),
                long_range(theirs),
            );
        }
        let heap = |name: &str| self.waiters_heap.iter().find(|heap| heap.name == name);
        if let (Some(ours), Some(theirs)) = (heap("latchkey"), heap("oauth2-rs")) {
            let callers = ours.callers.max(1.0);
            for (what, ours, theirs, unit) in [
                (
                    "heap held while every caller waits (probe, one batch)",
                    ours.waiting_bytes,
                    theirs.waiting_bytes,
                    " B",
                ),
                (
                    "heap allocated over the batch (probe)",
                    ours.bytes,
                    theirs.bytes,
                    " B",
                ),
                (
                    "allocations + reallocations over the batch (probe)",
                    ours.allocations,
                    theirs.allocations,
                    "",
                ),
            ] {
                let _ = writeln!(
                    out,
                    "| {what} | {}{unit} | {}{unit} | {} | per caller: {:.1}; {:.1} |",
                    grouped(ours),
                    grouped(theirs),
                    ratio_text((theirs > 0.0).then(|| ours / theirs)),
                    ours / callers,
                    theirs / callers,
                );
            }
        }
        out.push('\n');
    }

    fn device_section(&self, out: &mut String) {
        let Some(device) = &self.device else {
            return;
        };
        let _ = writeln!(
            out,
            "### Device login: one poll of the token endpoint (RFC 8628)\n\n\
             A device login polls `authorization_pending` until its last poll, which brings the \
             tokens; the figure is the CPU of every poll of a login, the last one's tokens \
             included, over the number of polls. The device-code request is not counted on \
             either side. Ratios are medians of per-round ratios, the sides alternating round \
             by round.\n\n\
             - In process (no sockets; each side is given a clone of the same \
             `http::Response` per poll). latchkey's engine, on virtual time moved on by the \
             provider's interval (the engine enforces it): per poll the timer fires, the token \
             request is built (form body, HTTP Basic), the answer read, `authorization_pending` \
             recognised and the next poll scheduled; after the last, the tokens are parsed, \
             persisted (confirmed at once) and handed out. oauth2-rs: \
             `exchange_device_access_token(..).request(client, sleep, None)` with a sleep that \
             returns at once: per poll the request is built, the clock read for its expiry \
             check, the answer deserialised into its error type.\n\
             - Over loopback, HTTP/1.1 included, at a local token endpoint on a thread of its \
             own whose CPU is subtracted: latchkey's tokio service (built-in HTTP client, tokens \
             in memory) runs its logins side by side, started 500 ms apart in all, and waits \
             the interval (1 s, the shortest it polls at) between polls, as the RFC requires; \
             oauth2-rs + reqwest runs as many tasks, as spread out, each polling as fast as \
             the endpoint answers (no-op sleep) or sleeping the interval with \
             `tokio::time::sleep` as a program would. Waking up from idle for each poll is \
             part of the cost.\n\n\
             | per poll | latchkey | oauth2-rs | latchkey / oauth2-rs | rounds' range (latchkey; oauth2-rs) |\n\
             |---|---|---|---|---|"
        );
        for (what, ours, theirs) in [
            (
                format!(
                    "in process: engine vs canned-answer client, {} logins × {POLLS} polls, {} rounds",
                    grouped(device.logins as f64),
                    device.engine.len()
                ),
                &device.engine,
                &device.oauth2,
            ),
            (
                format!(
                    "over loopback: tokio service vs reqwest with no-op sleep, {} logins × {POLLS_END_TO_END} polls, {} rounds",
                    grouped(device.logins_end_to_end as f64),
                    device.service.len()
                ),
                &device.service,
                &device.oauth2_reqwest,
            ),
            (
                format!(
                    "over loopback: tokio service vs reqwest sleeping the interval, {} logins × {POLLS_END_TO_END} polls, {} rounds",
                    grouped(device.logins_end_to_end as f64),
                    device.service.len()
                ),
                &device.service,
                &device.oauth2_sleeping,
            ),
        ] {
            if ours.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {}; {} |",
                time(Some(refresh::median(ours))),
                time(Some(refresh::median(theirs))),
                ratio_text(round_ratio(ours, theirs)),
                range_text(ours),
                range_text(theirs),
            );
        }
        out.push('\n');
    }

    fn in_process(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### In process (criterion medians; allocations per operation)\n\n\
             | operation | latchkey | allocations | compared with | its time | its allocations | ratio |\n\
             |---|---|---|---|---|---|---|"
        );
        let rows = [
            ("callback", "callback/floor_httparse", "httparse alone"),
            (
                "callback",
                "callback/floor_httparse_query",
                "httparse + query decode",
            ),
            (
                "token_response",
                "token_response/floor_serde_json_value",
                "serde_json::Value",
            ),
            ("token_response", "token_response/oauth2", "oauth2-rs"),
            ("authorize", "authorize/oauth2", "oauth2-rs"),
            ("exchange", "exchange/oauth2", "oauth2-rs"),
            ("whole_flow", "", "—"),
        ];
        for (group, other, label) in rows {
            let ours_name = format!("{group}/latchkey");
            let ours = self.median(&ours_name);
            let theirs = (!other.is_empty()).then(|| self.median(other)).flatten();
            let ratio = match (ours, theirs) {
                (Some(ours), Some(theirs)) if theirs > 0.0 => format!("{:.2}×", ours / theirs),
                _ => "—".into(),
            };
            let _ = writeln!(
                out,
                "| {group} | {} | {} | {label} | {} | {} | {ratio} |",
                time(ours),
                self.alloc_text(&ours_name),
                time(theirs),
                if other.is_empty() {
                    "—".into()
                } else {
                    self.alloc_text(other)
                },
            );
        }
        out.push('\n');
    }

    fn alloc_text(&self, name: &str) -> String {
        match self.allocs.get(name) {
            Some(allocs) if allocs.reallocations > 0.0 => format!(
                "{} + {} realloc",
                count(allocs.allocations),
                count(allocs.reallocations)
            ),
            Some(allocs) => count(allocs.allocations),
            None => "—".into(),
        }
    }

    fn memory_section(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### Memory (100,000 pending flows)\n\n\
             | what | heap per pending flow | peak RSS of the process |\n|---|---|---|"
        );
        for (name, bytes, rss) in &self.memory {
            let rss = rss.map_or("—".into(), |kib| {
                format!("{:.1} MiB", kib as f64 / 1024.0)
            });
            let _ = writeln!(out, "| {name} | {bytes:.0} B | {rss} |");
        }
        out.push('\n');
    }

    fn end_to_end(&self, out: &mut String) {
        let Some(floor) = self.e2e(Target::Floor) else {
            return;
        };
        let baseline = self.e2e(Target::Oauth2);
        let _ = writeln!(
            out,
            "### End to end over loopback ({} sequential and {} concurrent flows per target)\n\n\
             CPU is the callback server process's, per flow; \"vs\" columns are medians of the \
             per-round ratios (same round, interleaved).\n\n\
             | target | mode | flows/s | p50 | p99 | CPU per flow | CPU vs floor | CPU vs oauth2-rs | failures | peak RSS |\n\
             |---|---|---|---|---|---|---|---|---|---|",
            floor.sequential.flows + floor.sequential.failures,
            floor.concurrent.flows + floor.concurrent.failures,
        );
        for result in &self.e2e {
            for (mode_name, mode, floor_mode, base_mode) in [
                (
                    "sequential",
                    &result.sequential,
                    &floor.sequential,
                    baseline.map(|b| &b.sequential),
                ),
                (
                    "concurrent",
                    &result.concurrent,
                    &floor.concurrent,
                    baseline.map(|b| &b.concurrent),
                ),
            ] {
                let _ = writeln!(
                    out,
                    "| {} | {mode_name} | {:.0} | {} | {} | {:.1} µs | {} | {} | {} | {:.1} MiB |",
                    result.target.name(),
                    mode.flows_per_second(),
                    duration(mode.latency(0.5)),
                    duration(mode.latency(0.99)),
                    mode.cpu_micros_per_flow(),
                    ratio_text(paired_ratio(mode, floor_mode)),
                    ratio_text(base_mode.and_then(|base| paired_ratio(mode, base))),
                    mode.failures,
                    result.peak_rss_kib as f64 / 1024.0,
                );
            }
        }
        out.push('\n');
    }

    fn refresh_section(&self, out: &mut String) {
        let Some(first) = self.refresh.first() else {
            return;
        };
        let _ = writeln!(
            out,
            "### After the login ({} rounds; CPU of the client process, median over rounds)\n\n\
             | client | CPU per refresh | range over rounds | CPU per hand-out of valid tokens | range over rounds |\n\
             |---|---|---|---|---|",
            first.refresh_nanos.len()
        );
        let range = |values: &[f64]| {
            let low = values.iter().copied().fold(f64::INFINITY, f64::min);
            let high = values.iter().copied().fold(0.0, f64::max);
            format!("{}–{}", time(Some(low)), time(Some(high)))
        };
        for result in &self.refresh {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                result.client.name(),
                time(Some(refresh::median(&result.refresh_nanos))),
                range(&result.refresh_nanos),
                time(Some(refresh::median(&result.handout_nanos))),
                range(&result.handout_nanos),
            );
        }
        out.push('\n');
    }

    fn id_token_section(&self, out: &mut String) {
        let Some(first) = self.id_tokens.first() else {
            return;
        };
        let rounds = first.nanos.first().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "### Verifying an ID token ({rounds} rounds; CPU per verification, median over \
             rounds; in brackets the contender's time over latchkey's, range over rounds)\n"
        );
        let mut header = String::from("| algorithm |");
        let mut rule = String::from("|---|");
        for contender in CONTENDERS {
            let _ = write!(header, " {contender} |");
            rule.push_str("---|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for result in &self.id_tokens {
            let _ = writeln!(out, "{}", ratio_row(result.algorithm, &result.nanos));
        }
        out.push('\n');
    }

    fn signing_section(&self, out: &mut String) {
        let Some(first) = self.signing.first() else {
            return;
        };
        let rounds = first.nanos.first().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "### Signing for the client ({rounds} rounds; CPU per JWS, median over rounds; in \
             brackets the contender's time over latchkey's, range over rounds)\n"
        );
        let mut header = String::from("| what |");
        let mut rule = String::from("|---|");
        for contender in crate::signing::CONTENDERS {
            let _ = write!(header, " {contender} |");
            rule.push_str("---|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for result in &self.signing {
            let _ = writeln!(out, "{}", ratio_row(result.what, &result.nanos));
        }
        out.push('\n');
    }

    fn footprint_section(&self, out: &mut String) {
        if self.footprint.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "### Footprint\n\n| crate | normal dependencies | clean release build |\n|---|---|---|"
        );
        for footprint in &self.footprint {
            let build = footprint.build.map_or("—".into(), |build| {
                format!("{:.1} s", build.as_secs_f64())
            });
            let _ = writeln!(
                out,
                "| {} | {} | {build} |",
                footprint.label, footprint.dependencies
            );
        }
        out.push('\n');
    }

    fn targets(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### Targets\n\n| target | measured | met |\n|---|---|---|"
        );
        for verdict in self.verdicts() {
            let met = match verdict.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            let _ = writeln!(out, "| {} | {} | {met} |", verdict.target, verdict.measured);
        }
        out.push('\n');
    }

    fn verdicts(&self) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let callback = self.median("callback/latchkey");
        let floor = self.median("callback/floor_httparse_query");
        let ratio = callback.zip(floor).map(|(ours, floor)| ours / floor);
        verdicts.push(Verdict {
            target: "callback ≤ 1.5× httparse + query decode".into(),
            measured: ratio_text(ratio),
            met: ratio.map(|ratio| ratio <= 1.5),
        });
        let whole = self.median("whole_flow/latchkey");
        verdicts.push(Verdict {
            target: "whole flow in memory ≤ 5 µs".into(),
            measured: time(whole),
            met: whole.map(|ns| ns <= 5_000.0),
        });
        let allocs = self.allocs.get("whole_flow/latchkey");
        verdicts.push(Verdict {
            target: "whole flow ≤ 8 allocations (and reallocations)".into(),
            measured: self.alloc_text("whole_flow/latchkey"),
            met: allocs.map(|a| a.allocations + a.reallocations <= 8.0),
        });
        for (target, name, limit) in [
            (
                "≤ 256 B per pending flow (engine)",
                "latchkey engine",
                256.0,
            ),
            (
                "≤ 768 B per pending login (tokio service)",
                "latchkey-tokio service",
                768.0,
            ),
        ] {
            let pending = self
                .memory
                .iter()
                .find(|(measured, ..)| measured.starts_with(name))
                .map(|(_, bytes, _)| *bytes);
            verdicts.push(Verdict {
                target: target.into(),
                measured: pending.map_or("—".into(), |bytes| format!("{bytes:.0} B")),
                met: pending.map(|bytes| bytes <= limit),
            });
        }
        let floor = self.e2e(Target::Floor);
        let baseline = self.e2e(Target::Oauth2);
        for target in [Target::Smol, Target::SmolThreads, Target::Tokio] {
            let Some(ours) = self.e2e(target) else {
                continue;
            };
            let name = target.name();
            let worst = |select: fn(&TargetResult) -> &ModeResult, other: Option<&TargetResult>| {
                other.and_then(|other| paired_ratio(select(ours), select(other)))
            };
            for (mode, select) in [
                (
                    "sequential",
                    (|r: &TargetResult| &r.sequential) as fn(&TargetResult) -> &ModeResult,
                ),
                ("concurrent", |r: &TargetResult| &r.concurrent),
            ] {
                let vs_floor = worst(select, floor);
                verdicts.push(Verdict {
                    target: format!("{name}, {mode}: CPU per login ≤ 1.05× the floor's"),
                    measured: ratio_text(vs_floor),
                    met: vs_floor.map(|ratio| ratio <= 1.05),
                });
                let vs_base = worst(select, baseline);
                verdicts.push(Verdict {
                    target: format!("{name}, {mode}: CPU per login ≤ 0.9× oauth2-rs + axum's"),
                    measured: ratio_text(vs_base),
                    met: vs_base.map(|ratio| ratio <= 0.9),
                });
                let throughput = baseline
                    .map(|base| select(ours).flows_per_second() / select(base).flows_per_second());
                verdicts.push(Verdict {
                    target: format!("{name}, {mode}: flows/s ≥ oauth2-rs's"),
                    measured: ratio_text(throughput),
                    met: throughput.map(|ratio| ratio >= 1.0),
                });
            }
        }
        self.after_login_verdicts(&mut verdicts);
        let core = self
            .footprint
            .iter()
            .find(|f| f.label.starts_with("latchkey (core)"));
        verdicts.push(Verdict {
            target: "core normal dependencies ≤ 20".into(),
            measured: core.map_or("—".into(), |core| core.dependencies.to_string()),
            met: core.map(|core| core.dependencies <= 20),
        });
        let oauth2_lean = self
            .footprint
            .iter()
            .find(|f| f.label.contains("no default"))
            .and_then(|f| f.build);
        let build = core.and_then(|core| core.build).zip(oauth2_lean);
        verdicts.push(Verdict {
            target: "core clean build ≤ ½ of oauth2's without default features".into(),
            measured: build.map_or("—".into(), |(ours, theirs)| {
                format!("{:.2}×", ours.as_secs_f64() / theirs.as_secs_f64())
            }),
            met: build.map(|(ours, theirs)| ours.as_secs_f64() <= theirs.as_secs_f64() / 2.0),
        });
        verdicts
    }

    /// The targets of the refresh, the waiters and the device login.
    fn after_login_verdicts(&self, verdicts: &mut Vec<Verdict>) {
        let oauth2 = self.refresh.iter().find(|r| r.client == Client::Oauth2);
        for client in [Client::Smol, Client::Tokio] {
            let Some(ours) = self.refresh.iter().find(|r| r.client == client) else {
                continue;
            };
            let ratio =
                oauth2.and_then(|theirs| round_ratio(&ours.refresh_nanos, &theirs.refresh_nanos));
            verdicts.push(Verdict {
                target: format!(
                    "{}: CPU per refresh through the token source below oauth2-rs's",
                    client.name()
                ),
                measured: ratio_text(ratio),
                met: ratio.map(|ratio| ratio < 1.0),
            });
        }
        if let Some(waiters) = &self.waiters {
            let callers = grouped(waiters.callers as f64);
            let refreshes = &waiters.latchkey.refreshes;
            verdicts.push(Verdict {
                target: format!("{callers} waiters: exactly one refresh request"),
                measured: refreshes_text(refreshes),
                met: Some(!refreshes.is_empty() && refreshes.iter().all(|&n| n == 1)),
            });
            let ratio = round_ratio(&waiters.latchkey.cpu, &waiters.oauth2.cpu);
            verdicts.push(Verdict {
                target: format!("{callers} waiters: CPU below oauth2-rs + Mutex's"),
                measured: ratio_text(ratio),
                met: ratio.map(|ratio| ratio < 1.0),
            });
        }
        if let Some(device) = &self.device {
            for (setting, ours, theirs) in [
                ("in process", &device.engine, &device.oauth2),
                (
                    "over loopback, both sleeping the interval",
                    &device.service,
                    &device.oauth2_sleeping,
                ),
                (
                    "over loopback, oauth2-rs not sleeping",
                    &device.service,
                    &device.oauth2_reqwest,
                ),
            ] {
                let ratio = round_ratio(ours, theirs);
                verdicts.push(Verdict {
                    target: format!("device poll CPU below oauth2-rs's ({setting})"),
                    measured: ratio_text(ratio),
                    met: ratio.map(|ratio| ratio < 1.0),
                });
            }
        }
    }
}

/// Rows of an in-memory against Redis table: per row the two arms' medians, their ratio
/// and ranges (in µs), then redis-server's own CPU.
fn arm_rows(out: &mut String, rows: &[(&str, &Vec<f64>, &Vec<f64>)], server: &[f64]) {
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let range = |values: &[f64]| {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{:.1}–{:.1}", low / 1e3, high / 1e3)
    };
    for (what, memory, redis) in rows {
        let (ours, theirs) = (median(memory), median(redis));
        let _ = writeln!(
            out,
            "| {what} | {:.1} | {:.1} | {:.2}× | {} / {} |",
            ours / 1e3,
            theirs / 1e3,
            theirs / ours,
            range(memory),
            range(redis)
        );
    }
    let _ = writeln!(
        out,
        "| redis-server's own CPU, µs | — | {:.1} | — | {} |",
        median(server) / 1e3,
        range(server),
    );
}

/// The median over rounds of `ours[i] / theirs[i]` (rounds where both were measured).
pub fn round_ratio(ours: &[f64], theirs: &[f64]) -> Option<f64> {
    let ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .filter(|(_, theirs)| **theirs > 0.0)
        .map(|(ours, theirs)| ours / theirs)
        .collect();
    (!ratios.is_empty()).then(|| refresh::median(&ratios))
}

/// A whole number with thousands separated by commas.
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// Refresh requests per batch: "1 in each of N rounds", or every count.
fn refreshes_text(counts: &[u64]) -> String {
    match counts {
        [] => "—".into(),
        _ if counts.iter().all(|&n| n == 1) => format!("1 in each of {} rounds", counts.len()),
        _ => counts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The lowest and highest of `values` (nanoseconds).
fn range_text(values: &[f64]) -> String {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(0.0, f64::max);
    format!("{}–{}", time(Some(low)), time(Some(high)))
}

/// Nanoseconds as milliseconds from one up, as [`time`] below.
fn long_time(nanos: f64) -> String {
    if nanos >= 1e6 {
        format!("{:.2} ms", nanos / 1e6)
    } else {
        time(Some(nanos))
    }
}

/// [`range_text`] with [`long_time`].
fn long_range(values: &[f64]) -> String {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(0.0, f64::max);
    format!("{}–{}", long_time(low), long_time(high))
}

/// The median over rounds of `ours`' CPU per flow divided by `theirs'` in the same round.
pub fn paired_ratio(ours: &ModeResult, theirs: &ModeResult) -> Option<f64> {
    let mut ratios: Vec<f64> = ours
        .cpu_per_flow_by_round
        .iter()
        .zip(&theirs.cpu_per_flow_by_round)
        .filter(|(_, theirs)| **theirs > 0.0)
        .map(|(ours, theirs)| ours / theirs)
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some(ratios[ratios.len() / 2])
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or("—".into(), |ratio| format!("{ratio:.2}×"))
}

fn time(nanos: Option<f64>) -> String {
    match nanos {
        Some(ns) if ns >= 1_000.0 => format!("{:.2} µs", ns / 1_000.0),
        Some(ns) => format!("{ns:.0} ns"),
        None => "—".into(),
    }
}

fn duration(duration: std::time::Duration) -> String {
    time(Some(duration.as_nanos() as f64))
}

fn count(value: f64) -> String {
    if (value - value.round()).abs() < 0.05 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// A table row: `name`, then each contender's median over rounds, and for all but the first
/// (latchkey) the range over rounds of its time over latchkey's.
fn ratio_row(name: &str, nanos: &[Vec<f64>]) -> String {
    let mut row = format!("| {name} |");
    let ours = nanos.first().map(Vec::as_slice).unwrap_or_default();
    for (index, theirs) in nanos.iter().enumerate() {
        let _ = write!(row, " {}", time(Some(refresh::median(theirs))));
        if index > 0 {
            let ratios: Vec<f64> = theirs
                .iter()
                .zip(ours)
                .map(|(theirs, ours)| theirs / ours)
                .collect();
            let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let high = ratios.iter().copied().fold(0.0, f64::max);
            let _ = write!(row, " ({low:.2}–{high:.2}×)");
        }
        row.push_str(" |");
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(cpu_by_round: &[f64], flows: usize, wall_ms: u64) -> ModeResult {
        ModeResult {
            flows,
            wall: std::time::Duration::from_millis(wall_ms),
            cpu_nanos: cpu_by_round.iter().sum::<f64>() as u128 * flows as u128,
            cpu_per_flow_by_round: cpu_by_round.to_vec(),
            ..ModeResult::default()
        }
    }

    #[test]
    fn paired_ratios_take_the_median_of_same_round_ratios() {
        let ours = mode(&[100.0, 300.0, 120.0], 3, 1);
        let theirs = mode(&[100.0, 100.0, 100.0], 3, 1);
        assert_eq!(paired_ratio(&ours, &theirs), Some(1.2));
        assert_eq!(paired_ratio(&ours, &ModeResult::default()), None);
    }

    #[test]
    fn verdicts_follow_the_measurements() {
        let mut report = Report::default();
        report.medians.insert("callback/latchkey".into(), 900.0);
        report
            .medians
            .insert("callback/floor_httparse_query".into(), 700.0);
        report.medians.insert("whole_flow/latchkey".into(), 6_000.0);
        report.memory.push(("latchkey engine".into(), 500.0, None));
        let markdown = report.markdown();
        assert!(markdown.contains("| callback ≤ 1.5× httparse + query decode | 1.29× | yes |"));
        assert!(markdown.contains("| whole flow in memory ≤ 5 µs | 6.00 µs | **no** |"));
        assert!(markdown.contains("| ≤ 256 B per pending flow (engine) | 500 B | **no** |"));
        assert!(
            markdown
                .contains("| whole flow ≤ 8 allocations (and reallocations) | — | not measured |")
        );
        assert!(
            markdown.contains("| ≤ 768 B per pending login (tokio service) | — | not measured |")
        );
        assert!(!markdown.contains("waiters"));
        assert!(!markdown.contains("device poll"));
    }

    #[test]
    fn memory_and_allocation_targets_are_issue_19s() {
        let mut report = Report::default();
        report.memory.push(("latchkey engine".into(), 240.0, None));
        report.memory.push((
            "latchkey-tokio service (with each Login)".into(),
            800.0,
            Some(1024),
        ));
        report.allocs.insert(
            "whole_flow/latchkey".into(),
            Allocs {
                allocations: 7.0,
                reallocations: 2.0,
            },
        );
        let markdown = report.markdown();
        assert!(markdown.contains("| ≤ 256 B per pending flow (engine) | 240 B | yes |"));
        assert!(
            markdown.contains("| ≤ 768 B per pending login (tokio service) | 800 B | **no** |")
        );
        // Reallocations count: 7 + 2 is over 8.
        assert!(markdown.contains(
            "| whole flow ≤ 8 allocations (and reallocations) | 7 + 2 realloc | **no** |"
        ));
    }

    fn target(target: Target, cpu_by_round: &[f64], wall_ms: u64) -> TargetResult {
        TargetResult {
            target,
            sequential: mode(cpu_by_round, 100, wall_ms),
            concurrent: mode(cpu_by_round, 100, wall_ms),
            peak_rss_kib: 1024,
        }
    }

    #[test]
    fn end_to_end_targets_compare_with_the_floor_and_oauth2_rs() {
        let report = Report {
            e2e: vec![
                target(Target::Tokio, &[104.0, 104.0, 104.0], 90),
                target(Target::Oauth2, &[113.0, 113.0, 113.0], 100),
                target(Target::Floor, &[100.0, 100.0, 100.0], 80),
            ],
            ..Report::default()
        };
        let markdown = report.markdown();
        for mode in ["sequential", "concurrent"] {
            assert!(markdown.contains(&format!(
                "| latchkey-tokio, {mode}: CPU per login ≤ 1.05× the floor's | 1.04× | yes |"
            )));
            assert!(markdown.contains(&format!(
                "| latchkey-tokio, {mode}: CPU per login ≤ 0.9× oauth2-rs + axum's | 0.92× | **no** |"
            )));
            assert!(markdown.contains(&format!(
                "| latchkey-tokio, {mode}: flows/s ≥ oauth2-rs's | 1.11× | yes |"
            )));
        }
        // smol was not measured: no rows for it.
        assert!(!markdown.contains("latchkey-smol,"));
    }

    #[test]
    fn after_the_login_targets_use_per_round_ratios() {
        use crate::waiters::WaitersSide;
        let side = |cpu: &[f64], refreshes: &[u64]| WaitersSide {
            cpu: cpu.to_vec(),
            wall: vec![20e6; cpu.len()],
            tail: vec![1e6; cpu.len()],
            refreshes: refreshes.to_vec(),
        };
        let report = Report {
            refresh: vec![
                ClientResult {
                    client: Client::Tokio,
                    refresh_nanos: vec![80.0, 90.0, 300.0],
                    handout_nanos: vec![1.0; 3],
                },
                ClientResult {
                    client: Client::Oauth2,
                    refresh_nanos: vec![100.0, 100.0, 100.0],
                    handout_nanos: vec![1.0; 3],
                },
            ],
            waiters: Some(WaitersResult {
                callers: 1_000,
                latchkey: side(&[2e6, 2e6, 2e6], &[1, 1, 2]),
                oauth2: side(&[1e6, 4e6, 4e6], &[1, 1, 1]),
            }),
            device: Some(DeviceResult {
                logins: 10,
                engine: vec![1_000.0, 1_100.0],
                oauth2: vec![1_000.0, 1_000.0],
                logins_end_to_end: 5,
                service: vec![200e3],
                oauth2_reqwest: vec![50e3],
                oauth2_sleeping: vec![250e3],
            }),
            ..Report::default()
        };
        let markdown = report.markdown();
        assert!(markdown.contains(
            "| latchkey-tokio: CPU per refresh through the token source below oauth2-rs's | 0.90× | yes |"
        ));
        // One batch saw two refresh requests: the target is missed, and the table says so.
        assert!(
            markdown.contains("| 1,000 waiters: exactly one refresh request | 1, 1, 2 | **no** |")
        );
        assert!(
            markdown.contains("| 1,000 waiters: CPU below oauth2-rs + Mutex's | 0.50× | yes |")
        );
        assert!(
            markdown
                .contains("| device poll CPU below oauth2-rs's (in process) | 1.05× | **no** |")
        );
        assert!(markdown.contains(
            "| device poll CPU below oauth2-rs's (over loopback, both sleeping the interval) | 0.80× | yes |"
        ));
        assert!(markdown.contains("### 1,000 callers waiting on one refresh"));
        assert!(markdown.contains("### Device login: one poll of the token endpoint"));
    }

    #[test]
    fn round_ratios_pair_rounds_and_skip_empty_ones() {
        assert_eq!(round_ratio(&[2.0, 3.0, 8.0], &[1.0, 1.0, 2.0]), Some(3.0));
        assert_eq!(round_ratio(&[2.0], &[0.0]), None);
        assert_eq!(round_ratio(&[], &[]), None);
    }

    #[test]
    fn large_numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(12.0), "12");
        assert_eq!(grouped(1_000.0), "1,000");
        assert_eq!(grouped(926_155.0), "926,155");
        assert_eq!(grouped(1_201_512.4), "1,201,512");
    }
}
