//! The numbers `bench-lb` prints, and the markdown they are printed as.
//!
//! `bench-lb` runs lesson 04 under every strategy and connection shape and
//! puts the results side by side. Driving the lesson is the binary's job;
//! turning a [`LoadReport`] into a table row is here, apart from any
//! process, so the arithmetic (shares, spread, the machine line) has tests
//! and the book's measured page can be checked by reading this file.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use supervisor::{Event, Sched};

use crate::LoadReport;

/// Lesson 04's strategies, in the order it introduces them.
pub const STRATEGIES: [Sched; 3] = [Sched::RoundRobin, Sched::Shared, Sched::ReusePort];

/// What serves a cell: one plain process, the limit every other row is
/// divided by, or a lesson's cluster under one strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Plain,
    Cluster(Sched),
}

impl fmt::Display for Server {
    /// The row's name: [`LIMIT`], or the strategy as `--sched` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::Plain => f.write_str(LIMIT),
            Server::Cluster(sched) => sched.fmt(f),
        }
    }
}

/// The ids of the workers that said `ready`, in the order they did.
///
/// Read as the supervisor's [`Event`]s rather than as JSON picked by hand:
/// a renamed event or field is then a compile error here, not a harness
/// that waits for a `ready` that never comes. A line that is not a
/// supervisor event (a lesson's own record) is none of these.
pub fn ready_workers(events: &[serde_json::Value]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|event| match Event::deserialize(event) {
            Ok(Event::Ready { id }) => Some(id.0),
            _ => None,
        })
        .collect()
}

/// One cell of the benchmark: a strategy under one connection shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// A strategy (`rr`, `shared`, `reuseport`) or the plain process.
    pub server: Server,
    pub keep_alive: bool,
    pub requests_per_second: f64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub failed: u64,
    /// Why requests failed (`reset`, `status 503`, …), for the `failed` cell.
    pub failures: BTreeMap<String, u64>,
    /// Responses per worker, in worker-id order, including workers that
    /// answered none: a worker the kernel never picked is the finding.
    pub per_worker: Vec<(String, u64)>,
    /// Against the limit measured in the same rounds: (median, lowest,
    /// highest) of the per-round ratios; `None` when there is no limit row.
    pub ratio: Option<(f64, f64, f64)>,
    /// How many rounds the row summarises.
    pub rounds: usize,
}

impl Row {
    /// The row for `report`, measured on a cluster whose workers announced
    /// themselves as `workers` (their `listening` events' ids).
    pub fn new(server: Server, keep_alive: bool, report: &LoadReport, workers: &[u32]) -> Row {
        let mut counts: BTreeMap<String, u64> =
            workers.iter().map(|id| (id.to_string(), 0)).collect();
        // Merged rather than looked up: a response from a worker that never
        // said `listening` (a replacement, or no header: "?") still counts.
        for (worker, &n) in &report.by_worker {
            *counts.entry(worker.clone()).or_default() += n;
        }
        let mut per_worker: Vec<(String, u64)> = counts.into_iter().collect();
        // "10" sorts before "2" as text; workers are numbered.
        per_worker
            .sort_by_key(|(worker, _)| (worker.parse::<u32>().unwrap_or(u32::MAX), worker.clone()));

        let mut failures: BTreeMap<String, u64> = report
            .errors
            .iter()
            .map(|(kind, &n)| ((*kind).to_owned(), n))
            .collect();
        for (&status, &n) in &report.statuses {
            if !(200..300).contains(&status) {
                failures.insert(format!("status {status}"), n);
            }
        }

        Row {
            server,
            keep_alive,
            requests_per_second: report.requests_per_second(),
            p50: report.quantile(0.5),
            p99: report.quantile(0.99),
            failed: report.failed,
            failures,
            per_worker,
            ratio: None,
            rounds: 1,
        }
    }

    /// One row for several rounds of a cell: the round with the median
    /// requests per second stands for the cell, failures are added up
    /// over every round, and `ratios` (each round's to the limit measured
    /// in the same round) give the median and the spread.
    pub fn median_of(rounds: &[Row], ratios: &[f64]) -> Row {
        let mut by_speed: Vec<&Row> = rounds.iter().collect();
        by_speed.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
        let Some(middle) = by_speed.get(by_speed.len() / 2) else {
            return Row::new(Server::Plain, false, &LoadReport::default(), &[]);
        };
        let mut row = (*middle).clone();
        row.failed = rounds.iter().map(|r| r.failed).sum();
        row.failures = BTreeMap::new();
        for round in rounds {
            for (kind, n) in &round.failures {
                *row.failures.entry(kind.clone()).or_default() += n;
            }
        }
        let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let high = ratios.iter().copied().fold(0.0, f64::max);
        row.ratio = median(ratios).map(|m| (m, low, high));
        row.rounds = rounds.len();
        row
    }

    /// Each worker's percentage of the responses, `26/24/25/25 %`.
    pub fn share(&self) -> String {
        let total: u64 = self.per_worker.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return "–".into();
        }
        let shares: Vec<String> = self
            .per_worker
            .iter()
            .map(|(_, n)| format!("{:.0}", *n as f64 * 100.0 / total as f64))
            .collect();
        format!("{} %", shares.join("/"))
    }

    /// `(max - min) / mean` of responses per worker, in percent: the measure
    /// lesson 04's own table and [`LoadReport::spread_pct`] use, but over
    /// every worker, so one that got nothing pulls the minimum to zero
    /// instead of vanishing from the count.
    pub fn spread_pct(&self) -> f64 {
        supervisor::spread::spread_pct(self.per_worker.iter().map(|&(_, n)| n))
    }

    fn failed_cell(&self) -> String {
        if self.failures.is_empty() {
            return self.failed.to_string();
        }
        let why: Vec<String> = self
            .failures
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        format!("{} ({})", self.failed, why.join(", "))
    }
}

fn millis(time: Option<Duration>) -> String {
    time.map_or_else(
        || "–".into(),
        |time| format!("{:.2}", time.as_secs_f64() * 1000.0),
    )
}

/// The rows as one markdown table, with a line under it saying what the
/// last two columns count.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| strategy | connections | ÷ one process (median, rounds' range) | requests/s | p50 ms | p99 ms | failed | per-worker share | max−min spread % |\n\
         |----------|-------------|---------------------------------------:|-----------:|-------:|-------:|-------:|------------------|-----------------:|\n",
    );
    for row in rows {
        let ratio = row.ratio.map_or_else(
            || "–".to_string(),
            |(median, low, high)| format!("{median:.2} ({low:.2}–{high:.2})"),
        );
        out.push_str(&format!(
            "| {} | {} | {ratio} | {:.0} | {} | {} | {} | {} | {:.0} |\n",
            row.server,
            if row.keep_alive { "keep-alive" } else { "new" },
            row.requests_per_second,
            millis(row.p50),
            millis(row.p99),
            row.failed_cell(),
            row.share(),
            row.spread_pct(),
        ));
    }
    out.push_str(
        "\n÷ one process: requests/s against one plain multi-threaded hyper process with the same answer, measured in the same round; \
         the median of the rounds, and their lowest and highest. Requests/s, p50 and p99: the median round. Failed: all rounds. \
         Share: each worker's part of the responses, in worker order. \
         Spread: (most − fewest responses per worker) / mean, as lesson 04's own table computes it; \
         0 % is perfectly even.\n",
    );
    out
}

/// A ratio to the limit this close to 1 (or above it) is not a cost this
/// machine can measure: rounds of the same cell differ by more.
const NOISE_FLOOR: f64 = 0.97;

/// The name of the row every other is divided by: one plain process.
pub const LIMIT: &str = "one process";

/// What this run's table says, in sentences computed from it: for each
/// connection shape, the strategy nearest the one-process limit and the
/// one that spread the work most evenly. Written by the program rather
/// than by hand so the words can never disagree with the numbers beside
/// them, whichever machine produced them.
pub fn reading(rows: &[Row]) -> String {
    let mut out = String::new();
    for keep_alive in [false, true] {
        let shape = if keep_alive {
            "keep-alive connections"
        } else {
            "a new connection per request"
        };
        let cluster: Vec<&Row> = rows
            .iter()
            .filter(|row| row.keep_alive == keep_alive && row.ratio.is_some())
            .filter(|row| row.server != Server::Plain)
            .collect();
        let fastest = cluster.iter().max_by(|a, b| {
            let (a, b) = (a.ratio.map_or(0.0, |r| r.0), b.ratio.map_or(0.0, |r| r.0));
            a.total_cmp(&b)
        });
        let evenest = cluster
            .iter()
            .min_by(|a, b| a.spread_pct().total_cmp(&b.spread_pct()));
        let (Some(fastest), Some(evenest)) = (fastest, evenest) else {
            continue;
        };
        let ratio = fastest.ratio.map_or(0.0, |r| r.0);
        let cost = if ratio >= NOISE_FLOOR {
            "the cluster's cost is lost in this machine's noise".to_owned()
        } else {
            format!("so the cluster cost {:.0} %", (1.0 - ratio) * 100.0)
        };
        out.push_str(&format!(
            "With {shape}, {} came nearest one plain process ({:.0} % of its requests/s; {cost}); \
             {} spread the work most evenly ({:.0} % max−min spread).",
            fastest.server,
            ratio * 100.0,
            evenest.server,
            evenest.spread_pct(),
        ));
        let failed: u64 = rows
            .iter()
            .filter(|row| row.keep_alive == keep_alive)
            .map(|row| row.failed)
            .sum();
        if failed > 0 {
            out.push_str(&format!(
                " {failed} requests failed in these cells: see the failed column."
            ));
        }
        out.push_str("\n\n");
    }
    out.trim_end().to_owned() + "\n"
}

/// What the numbers were measured on: they mean little without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub cores: Option<usize>,
    /// `uname -sr`: `Linux 6.8.0-45-generic`.
    pub system: Option<String>,
    /// `/proc/cpuinfo`'s first `model name`.
    pub cpu: Option<String>,
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cores {
            Some(cores) => write!(f, "{cores} cores")?,
            None => write!(f, "cores unknown")?,
        }
        if let Some(cpu) = &self.cpu {
            write!(f, " ({cpu})")?;
        }
        write!(
            f,
            ", {}",
            self.system.as_deref().unwrap_or("system unknown")
        )
    }
}

impl Machine {
    /// This machine: its usable cores, `uname -sr` (read from the kernel's
    /// own copy in /proc, the same strings `uname(2)` returns) and its CPU.
    pub fn here() -> Machine {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
                .ok()
                .map(|text| text.trim().to_owned())
                .filter(|text| !text.is_empty())
        };
        let system = read("ostype").zip(read("osrelease"));
        Machine {
            cores: std::thread::available_parallelism().ok().map(usize::from),
            system: system.map(|(os, release)| format!("{os} {release}")),
            cpu: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|text| cpu_model(&text)),
        }
    }

    /// Today's date in UTC (`2026-11-25`), for the line above a table.
    pub fn today() -> String {
        std::process::Command::new("date")
            .args(["-u", "+%F"])
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .filter(|date| !date.is_empty())
            .unwrap_or_else(|| "date unknown".into())
    }
}

/// The median of `values`; `None` for none. Rounds of a benchmark on a
/// noisy machine are summarised by it, not by the mean, so one disturbed
/// round cannot drag the figure.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The CPU model in `/proc/cpuinfo`'s text, if it names one (x86 does;
/// many ARM kernels don't).
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, value)| value.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|model| !model.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(by_worker: &[(&str, u64)]) -> LoadReport {
        let mut report = LoadReport::default();
        for &(worker, n) in by_worker {
            report.by_worker.insert(worker.into(), n);
            report.ok += n;
            report.sent += n;
        }
        report
    }

    #[test]
    fn the_median_of_an_even_count_is_the_middle_pair_s_mean() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn a_worker_that_answered_nothing_is_still_a_column() {
        let row = Row::new(
            Server::Cluster(Sched::Shared),
            false,
            &report(&[("1", 60), ("2", 40)]),
            &[1, 2, 3],
        );
        assert_eq!(row.share(), "60/40/0 %");
        // Mean 33.3, max 60, min 0: the idle worker is what makes it 180 %.
        assert_eq!(row.spread_pct().round(), 180.0);
    }

    #[test]
    fn workers_are_in_number_order_not_text_order() {
        let counts = [("10", 1), ("2", 1), ("1", 1), ("?", 1)];
        let row = Row::new(
            Server::Cluster(Sched::RoundRobin),
            true,
            &report(&counts),
            &[],
        );
        let order: Vec<&str> = row.per_worker.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(order, ["1", "2", "10", "?"]);
    }

    #[test]
    fn an_even_spread_is_zero() {
        let row = Row::new(
            Server::Cluster(Sched::RoundRobin),
            false,
            &report(&[("1", 25), ("2", 25)]),
            &[1, 2],
        );
        assert_eq!((row.share(), row.spread_pct()), ("50/50 %".into(), 0.0));
        let empty = Row::new(
            Server::Cluster(Sched::RoundRobin),
            false,
            &LoadReport::default(),
            &[],
        );
        assert_eq!((empty.share(), empty.spread_pct()), ("–".into(), 0.0));
    }

    #[test]
    fn failures_say_why() {
        let mut failing = report(&[("1", 3)]);
        failing.errors.insert("reset", 2);
        failing.statuses.insert(200, 3);
        failing.statuses.insert(503, 1);
        failing.failed = 3;
        let row = Row::new(Server::Cluster(Sched::ReusePort), false, &failing, &[1]);
        assert_eq!(row.failed_cell(), "3 (reset 2, status 503 1)");
    }

    #[test]
    fn the_table_has_a_line_per_row() {
        let mut measured = report(&[("1", 26), ("2", 24), ("3", 25), ("4", 25)]);
        measured.latencies = vec![Duration::from_micros(1500); 3];
        measured.elapsed = Duration::from_secs(1);
        let row = Row::new(
            Server::Cluster(Sched::RoundRobin),
            true,
            &measured,
            &[1, 2, 3, 4],
        );
        let table = table(&[row]);
        assert!(
            table.contains("| rr | keep-alive | – | 100 | 1.50 | 1.50 | 0 | 26/24/25/25 % | 8 |"),
            "{table}"
        );
    }

    #[test]
    fn the_reading_names_the_nearest_and_the_evenest_strategy() {
        let row = |server: Server, by_worker: &[(&str, u64)], ratio: f64| {
            let mut row = Row::new(server, false, &report(by_worker), &[1, 2]);
            row.ratio = Some((ratio, ratio, ratio));
            row
        };
        let rows = [
            row(Server::Plain, &[("1", 100)], 1.0),
            row(
                Server::Cluster(Sched::RoundRobin),
                &[("1", 50), ("2", 50)],
                0.6,
            ),
            row(
                Server::Cluster(Sched::ReusePort),
                &[("1", 70), ("2", 30)],
                0.8,
            ),
        ];
        let text = reading(&rows);
        assert!(
            text.contains("reuseport came nearest one plain process (80 %"),
            "{text}"
        );
        assert!(
            text.contains("rr spread the work most evenly (0 %"),
            "{text}"
        );
        // No keep-alive rows were measured: no sentence about them.
        assert!(!text.contains("keep-alive"), "{text}");
        assert!(text.contains("so the cluster cost 20 %"), "{text}");
        // Level with the limit, or above it: no cost is claimed.
        let level = [
            row(Server::Plain, &[("1", 100)], 1.0),
            row(
                Server::Cluster(Sched::RoundRobin),
                &[("1", 50), ("2", 50)],
                1.1,
            ),
        ];
        assert!(reading(&level).contains("lost in this machine's noise"));
    }

    #[test]
    fn ready_workers_are_read_as_supervisor_events() {
        let events = [
            serde_json::json!({"event": "fork", "id": 1, "pid": 10, "generation": 1}),
            serde_json::json!({"event": "ready", "id": 2}),
            // A lesson's own record named like nothing of the supervisor's.
            serde_json::json!({"event": "distribution", "id": 9}),
            serde_json::json!({"event": "ready", "id": 1}),
        ];
        assert_eq!(ready_workers(&events), [2, 1]);
        assert_eq!(Server::Cluster(Sched::ReusePort).to_string(), "reuseport");
        assert_eq!(Server::Plain.to_string(), LIMIT);
    }

    #[test]
    fn the_cpu_model_is_the_first_model_name() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\n\
                       model name\t: Intel(R) Xeon(R)   CPU @ 2.20GHz\n\nprocessor\t: 1\n\
                       model name\t: something else\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor\t: 0\nFeatures\t: fp asimd\n"), None);
    }

    #[test]
    fn the_machine_line_says_what_it_does_not_know() {
        let known = Machine {
            cores: Some(2),
            system: Some("Linux 6.8.0".into()),
            cpu: Some("AMD EPYC".into()),
        };
        assert_eq!(known.to_string(), "2 cores (AMD EPYC), Linux 6.8.0");
        let unknown = Machine {
            cores: None,
            system: None,
            cpu: None,
        };
        assert_eq!(unknown.to_string(), "cores unknown, system unknown");
    }
}
