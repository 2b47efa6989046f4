//! Node and Rust side by side: one script, both programs, one table.
//!
//! The book's "what the usual answer gets wrong" rests on two runs: the
//! usual answer in Node (the lesson's Node twin) and the Rust lesson, under
//! the same load and the same faults. A comparison is an ordinary scenario
//! script in `scenarios/compare/NN-*.toml` with a `[compare]` table that
//! names the twin and what to time:
//!
//! ```toml
//! title = "A rolling restart under 64 busy keep-alive clients"
//! args = ["--serve", "--workers", "4"]      # the Rust lesson's flags
//!
//! [compare]
//! node = "usual.js"                         # lessons/08-*/node/usual.js
//! node_args = ["--workers", "4"]
//! rounds = 2                                # each program, alternating
//! operation = "rollout"                     # what the timed stretch is called
//! from = "rollout_started"                  # an event kind, "signal" or "kill"
//! to = "rollout_finished"                   # an event kind, or "exit"
//!
//! [[step]]
//! …                                         # the same steps for both
//! ```
//!
//! Each run's transcript is not kept: the table is the result. A check in a
//! comparison that fails is reported under the table, not as an error —
//! what differs between the programs is the point.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::runner::{Measured, Outcome};
use crate::script::{Program, Script};

/// A comparison file, read and checked.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub name: String,
    pub title: String,
    pub path: PathBuf,
    pub rust: Script,
    pub node: Script,
    pub settings: Settings,
}

/// The `[compare]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The twin's file in the lesson's `node/` folder.
    pub node: String,
    #[serde(default)]
    pub node_args: Vec<String>,
    #[serde(default = "default_rounds")]
    pub rounds: u32,
    /// What the timed stretch is called in the table ("rollout", "drain").
    pub operation: String,
    /// Where it starts: an event kind, `signal` (the first signal step) or
    /// `kill` (the first `kill_worker` step).
    pub from: String,
    /// Where it ends: an event kind, or `exit` (the primary's exit).
    pub to: String,
}

fn default_rounds() -> u32 {
    2
}

impl Comparison {
    /// Reads `path`: a scenario script with a `[compare]` table.
    pub fn load(path: &Path) -> Result<Comparison, String> {
        let script = Script::load(path).map_err(|error| error.to_string())?;
        let table = script.compare.clone().ok_or_else(|| {
            format!(
                "{}: a comparison needs a [compare] table (node, operation, from, to)",
                path.display()
            )
        })?;
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|error| format!("{}: [compare]: {error}", path.display()))?;
        if settings.rounds == 0 || settings.rounds > 20 {
            return Err(format!(
                "{}: [compare] rounds must be 1 to 20, not {}",
                path.display(),
                settings.rounds
            ));
        }
        let mut node = script.clone();
        node.program = Program::Node(settings.node.clone());
        node.args = settings.node_args.clone();
        let mut rust = script.clone();
        rust.program = Program::Lesson;
        Ok(Comparison {
            name: script.name.clone(),
            title: script.title.clone(),
            path: path.to_owned(),
            rust,
            node,
            settings,
        })
    }

    /// The programs in the order round `round` (from 1) runs them: they
    /// alternate, so neither always runs on a machine the other warmed.
    pub fn order(&self, round: u32) -> [Side; 2] {
        if round % 2 == 1 {
            [Side::Node, Side::Rust]
        } else {
            [Side::Rust, Side::Node]
        }
    }

    pub fn script(&self, side: Side) -> &Script {
        match side {
            Side::Node => &self.node,
            Side::Rust => &self.rust,
        }
    }
}

/// Which program a run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Node,
    Rust,
}

/// The comparisons of lesson `nn`, sorted by name.
pub fn comparisons_for(nn: &str) -> Result<Vec<Comparison>, String> {
    let dir = crate::scripts_dir().join("compare");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|error| format!("cannot list {}: {error}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "toml")
                && path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(&format!("{nn}-")))
        })
        .collect();
    paths.sort();
    paths.iter().map(|path| Comparison::load(path)).collect()
}

/// One program's run, reduced to what the table shows.
#[derive(Debug, Clone)]
pub struct Run {
    pub side: Side,
    pub round: u32,
    /// By load, in the order the script ran them.
    pub loads: Vec<(String, LoadLine)>,
    /// How long the operation took; `None` if it never ended.
    pub operation: Option<Duration>,
    /// The operation never started (its `from` never came).
    pub never_started: bool,
    pub rss_mib: Option<f64>,
    /// Checks that did not hold, and steps that gave up.
    pub notes: Vec<String>,
}

/// What one load saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadLine {
    pub ok: u64,
    pub failed: u64,
    /// Failures by how (reset, closed, refused, timeout, HTTP status).
    pub how: BTreeMap<String, u64>,
    pub per_second: f64,
    /// The 99th percentile of answered requests' times.
    pub p99: Option<Duration>,
    /// How many workers answered.
    pub workers: usize,
}

impl Run {
    pub fn new(side: Side, round: u32, settings: &Settings, outcome: &Outcome) -> Run {
        let measured = &outcome.measured;
        let loads = measured
            .load_order
            .iter()
            .filter_map(|name| measured.loads.get(name).map(|report| (name, report)))
            .map(|(name, report)| {
                let mut how: BTreeMap<String, u64> = report
                    .errors
                    .iter()
                    .map(|(kind, n)| ((*kind).to_owned(), *n))
                    .collect();
                for (status, n) in &report.statuses {
                    if !(200..300).contains(status) {
                        how.insert(format!("HTTP {status}"), *n);
                    }
                }
                let seconds = report.elapsed.as_secs_f64();
                let line = LoadLine {
                    ok: report.ok,
                    failed: report.failed,
                    how,
                    per_second: if seconds > 0.0 {
                        report.ok as f64 / seconds
                    } else {
                        0.0
                    },
                    p99: report.quantile(0.99),
                    workers: report.by_worker.len(),
                };
                (name.clone(), line)
            })
            .collect();
        let started = moment(measured, &settings.from, Duration::ZERO);
        let operation = started.and_then(|from| {
            moment(measured, &settings.to, from).map(|to| to.saturating_sub(from))
        });
        let rss = &measured.worker_rss_mib;
        Run {
            side,
            round,
            loads,
            operation,
            never_started: started.is_none(),
            rss_mib: (!rss.is_empty()).then(|| rss.iter().sum::<f64>() / rss.len() as f64),
            notes: outcome.failures.clone(),
        }
    }
}

/// When `what` (an event kind, `signal` or `exit`) first happened at or
/// after `after`.
fn moment(measured: &Measured, what: &str, after: Duration) -> Option<Duration> {
    match what {
        "signal" => measured
            .signals
            .iter()
            .map(|(at, _)| *at)
            .find(|at| *at >= after),
        "kill" => measured.kills.iter().copied().find(|at| *at >= after),
        "exit" => measured.exited.filter(|at| *at >= after),
        kind => measured
            .timeline
            .iter()
            .find(|(at, event)| *at >= after && event["event"] == kind)
            .map(|(at, _)| *at),
    }
}

/// The markdown for one comparison: a line saying what ran, the table, and
/// any check that did not hold.
pub fn table(comparison: &Comparison, runs: &[Run], lesson_bin: &str) -> String {
    let settings = &comparison.settings;
    let mut out = String::new();
    let _ = writeln!(out, "#### {}\n", comparison.title);
    let nn = comparison.name.get(..2).unwrap_or_default();
    let root = crate::workspace_root();
    let twin = crate::node::twin(&root, nn, &settings.node)
        .ok()
        .and_then(|path| path.strip_prefix(&root).ok().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from(&settings.node));
    let _ = writeln!(
        out,
        "Node: `node {} {}`; Rust: `{} {}`; both driven by `scenarios/compare/{}.toml`.\n",
        twin.display(),
        settings.node_args.join(" "),
        lesson_bin,
        comparison.rust.args.join(" "),
        comparison.name
    );
    // The loads in the order the script runs them.
    let mut names: Vec<&String> = Vec::new();
    for (name, _) in runs.iter().flat_map(|run| &run.loads) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut header = String::from("| run |");
    let mut rule = String::from("|-----|");
    for name in &names {
        let _ = write!(
            header,
            " `{name}`: ok / failed (how) | ok/s | p99 | workers |"
        );
        rule.push_str("---:|---:|---:|---:|");
    }
    let _ = write!(header, " {} took | RSS per worker |", settings.operation);
    rule.push_str("---:|---:|");
    let _ = writeln!(out, "{header}\n{rule}");

    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by_key(|run| (run.side, run.round));
    for run in sorted {
        out.push_str(&row(run, &names, settings));
    }
    let notes: Vec<String> = runs
        .iter()
        .flat_map(|run| {
            let side = match run.side {
                Side::Node => "Node",
                Side::Rust => "Rust",
            };
            run.notes
                .iter()
                .map(move |note| format!("- {side}, round {}: {note}", run.round))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nWhat did not hold:\n\n{}", notes.join("\n"));
    }
    out
}

/// One run's line of the table: a cell group per load (in `names`'
/// order, a dash where this run had none), then the timed stretch and
/// the memory. Apart from [`table`] so the table's shape reads at a glance.
fn row(run: &Run, names: &[&String], settings: &Settings) -> String {
    let side = match run.side {
        Side::Node => "Node",
        Side::Rust => "Rust",
    };
    let mut row = format!("| {side}, round {} |", run.round);
    for name in names {
        match run.loads.iter().find(|(n, _)| n == *name).map(|(_, l)| l) {
            Some(line) => {
                let how = if line.how.is_empty() {
                    String::new()
                } else {
                    let kinds: Vec<String> =
                        line.how.iter().map(|(k, n)| format!("{k} {n}")).collect();
                    format!(" ({})", kinds.join(", "))
                };
                let _ = write!(
                    row,
                    " {} / {}{how} | {:.0} | {} | {} |",
                    line.ok,
                    line.failed,
                    line.per_second,
                    line.p99.map_or_else(|| "—".to_owned(), short),
                    line.workers
                );
            }
            None => row.push_str(" — | — | — | — |"),
        }
    }
    let took = match (run.never_started, run.operation) {
        (true, _) => format!("never began (no `{}`)", settings.from),
        (false, Some(took)) => short(took),
        (false, None) => "did not finish".to_owned(),
    };
    let rss = run
        .rss_mib
        .map_or_else(|| "—".to_owned(), |mib| format!("{mib:.1} MiB"));
    let _ = writeln!(row, " {took} | {rss} |");
    row
}

/// `<1 ms`, `38 ms`, `1.25 s`: a time as the tables show it.
fn short(took: Duration) -> String {
    if took < Duration::from_millis(1) {
        "<1 ms".to_owned()
    } else if took < Duration::from_secs(1) {
        format!("{} ms", took.as_millis())
    } else {
        format!("{:.2} s", took.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> Measured {
        Measured {
            timeline: vec![
                (
                    Duration::from_millis(100),
                    serde_json::json!({"event": "rollout_started"}),
                ),
                (
                    Duration::from_millis(1600),
                    serde_json::json!({"event": "rollout_finished"}),
                ),
            ],
            signals: vec![(Duration::from_millis(90), "SIGUSR2".into())],
            kills: vec![Duration::from_millis(95)],
            exited: Some(Duration::from_millis(2000)),
            ..Measured::default()
        }
    }

    #[test]
    fn moments_are_events_signals_or_the_exit() {
        let m = measured();
        assert_eq!(
            moment(&m, "rollout_started", Duration::ZERO),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            moment(&m, "signal", Duration::ZERO),
            Some(Duration::from_millis(90))
        );
        assert_eq!(
            moment(&m, "exit", Duration::from_millis(100)),
            Some(Duration::from_millis(2000))
        );
        assert_eq!(moment(&m, "rollout_finished", Duration::from_secs(2)), None);
        assert_eq!(
            moment(&m, "kill", Duration::ZERO),
            Some(Duration::from_millis(95))
        );
        assert_eq!(short(Duration::from_micros(300)), "<1 ms");
        assert_eq!(short(Duration::from_millis(1250)), "1.25 s");
    }

    #[test]
    fn a_run_that_never_finishes_says_so_and_failures_say_how() {
        let settings = Settings {
            node: "usual.js".into(),
            node_args: Vec::new(),
            rounds: 1,
            operation: "rollout".into(),
            from: "rollout_started".into(),
            to: "rollout_finished".into(),
        };
        let mut measured = measured();
        measured.timeline.pop();
        let mut report = crate::LoadReport {
            ok: 90,
            failed: 10,
            elapsed: Duration::from_secs(2),
            ..crate::LoadReport::default()
        };
        report.errors.insert("reset", 7);
        report.statuses.insert(503, 3);
        report.statuses.insert(200, 90);
        measured.loads.insert("keep".into(), report);
        measured.load_order.push("keep".into());
        measured.worker_rss_mib = vec![40.0, 50.0];
        let outcome = Outcome {
            transcript: String::new(),
            failures: vec!["check x ✗".into()],
            failed: Vec::new(),
            stderr: String::new(),
            measured,
        };
        let run = Run::new(Side::Node, 1, &settings, &outcome);
        assert_eq!(run.operation, None);
        assert!(!run.never_started);
        assert_eq!(run.rss_mib, Some(45.0));
        let keep = &run.loads[0].1;
        assert_eq!(keep.per_second, 45.0);
        assert_eq!(
            keep.how
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>(),
            ["HTTP 503 3", "reset 7"]
        );
    }

    #[test]
    fn a_comparison_needs_its_table_and_alternates_the_programs() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("08-x.toml");
        std::fs::write(
            &path,
            "title = \"t\"\nargs = [\"--serve\"]\n[compare]\nnode = \"usual.js\"\noperation = \"rollout\"\nfrom = \"signal\"\nto = \"exit\"\n[[step]]\nsignal = \"TERM\"\n",
        )
        .map_err(|e| e.to_string())?;
        let comparison = Comparison::load(&path)?;
        assert_eq!(comparison.node.program, Program::Node("usual.js".into()));
        assert_eq!(comparison.rust.args, ["--serve"]);
        assert!(comparison.node.args.is_empty());
        assert_eq!(comparison.order(1), [Side::Node, Side::Rust]);
        assert_eq!(comparison.order(2), [Side::Rust, Side::Node]);

        std::fs::write(&path, "title = \"t\"\n[[step]]\nsignal = \"TERM\"\n")
            .map_err(|e| e.to_string())?;
        let error = Comparison::load(&path).err().unwrap_or_default();
        assert!(error.contains("needs a [compare] table"), "{error}");
        Ok(())
    }
}
