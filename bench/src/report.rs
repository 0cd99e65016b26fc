//! The one table: every figure of a run, the ratios between contenders measured in that
//! same run, and whether each target is met. Rendered as Markdown, printed and written to
//! `target/bench-report.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::e2e::{ModeResult, TargetResult};
use crate::footprint::Footprint;
use crate::id_token::{AlgorithmResult, CONTENDERS};
use crate::refresh::{self, ClientResult};
use crate::servers::Target;

/// Allocations of one operation, per run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocs {
    /// `malloc`s.
    pub allocations: f64,
    /// `realloc`s.
    pub reallocations: f64,
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
    /// Logins through Redis against in memory.
    pub shared: Option<crate::shared::SharedResult>,
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
        self.id_token_section(&mut out);
        self.shared_section(&mut out);
        self.footprint_section(&mut out);
        self.targets(&mut out);
        out
    }

    fn shared_section(&self, out: &mut String) {
        let Some(shared) = &self.shared else {
            return;
        };
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
        let _ = writeln!(
            out,
            "\n### Logins shared by replicas: Redis against in memory (tokio service, one process)\n\n\
             | per login | in memory | through Redis | ratio (medians) | rounds' range, µs (memory / Redis) |\n\
             |---|---|---|---|---|"
        );
        for (what, memory, redis) in [
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
        ] {
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
            "| redis-server's own CPU, µs | — | {:.1} | — | {} |\n\n\
             Redis memory per pending flow (sealed record, key, expiry): {:.0} B.",
            median(&shared.server_cpu) / 1e3,
            range(&shared.server_cpu),
            shared.redis_bytes_per_pending
        );
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
            let mut row = format!("| {} |", result.algorithm);
            let ours = result.nanos.first().map(Vec::as_slice).unwrap_or_default();
            for (index, nanos) in result.nanos.iter().enumerate() {
                let _ = write!(row, " {}", time(Some(refresh::median(nanos))));
                if index > 0 {
                    let ratios: Vec<f64> = nanos
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
            let _ = writeln!(out, "{row}");
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
            target: "whole flow ≤ 20 allocations".into(),
            measured: self.alloc_text("whole_flow/latchkey"),
            met: allocs.map(|a| a.allocations + a.reallocations <= 20.0),
        });
        let pending = self
            .memory
            .iter()
            .find(|(name, ..)| name == "latchkey engine")
            .map(|(_, bytes, _)| *bytes);
        verdicts.push(Verdict {
            target: "≤ 1 KiB per pending flow (engine)".into(),
            measured: pending.map_or("—".into(), |bytes| format!("{bytes:.0} B")),
            met: pending.map(|bytes| bytes <= 1024.0),
        });
        let floor = self.e2e(Target::Floor);
        let baseline = self.e2e(Target::Oauth2);
        for target in [Target::Smol, Target::Tokio] {
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
                    target: format!("{name}, {mode}: CPU per flow ≤ 1.1× the floor's"),
                    measured: ratio_text(vs_floor),
                    met: vs_floor.map(|ratio| ratio <= 1.1),
                });
                let vs_base = worst(select, baseline);
                verdicts.push(Verdict {
                    target: format!("{name}, {mode}: CPU per flow below oauth2-rs's"),
                    measured: ratio_text(vs_base),
                    met: vs_base.map(|ratio| ratio < 1.0),
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
        assert!(markdown.contains("| ≤ 1 KiB per pending flow (engine) | 500 B | yes |"));
        assert!(markdown.contains("| whole flow ≤ 20 allocations | — | not measured |"));
    }
}
