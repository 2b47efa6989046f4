//! Printing events: colour-prefixed lines for people, JSON lines for machines.
//!
//! A lesson is watched by a person (`just lesson 01`) and driven by the
//! scenario runner (`--events json`). Both get the same events from the same
//! place, so what the book shows and what the tests check cannot disagree.
//! In JSON mode stdout carries nothing but events — worker output is sent to
//! stderr by the primary — so the runner can parse every line.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::str::FromStr;

use serde::Serialize;

use crate::event::{Event, ExitReason, GaveUpCause, HealthReason, RolloutOutcome};
use crate::role::WorkerId;

/// How the primary prints its events (`--events human|json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EventsFormat {
    /// Readable lines, coloured per worker when stdout is a terminal.
    #[default]
    Human,
    /// One JSON object per line on stdout, for the scenario runner.
    Json,
    /// Nothing at all: for tests that read events with `subscribe`.
    Quiet,
}

impl FromStr for EventsFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(EventsFormat::Human),
            "json" => Ok(EventsFormat::Json),
            "quiet" => Ok(EventsFormat::Quiet),
            other => Err(format!(
                "unknown events format {other:?}: use human, json or quiet"
            )),
        }
    }
}

impl fmt::Display for EventsFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventsFormat::Human => "human",
            EventsFormat::Json => "json",
            EventsFormat::Quiet => "quiet",
        })
    }
}

/// Writes events in the chosen format. Cheap to clone.
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    format: EventsFormat,
    colour: bool,
}

impl Reporter {
    pub fn new(format: EventsFormat) -> Self {
        let colour = format == EventsFormat::Human && std::io::stdout().is_terminal();
        Reporter { format, colour }
    }

    pub fn format(&self) -> EventsFormat {
        self.format
    }

    /// Prints one supervisor event.
    pub fn event(&self, event: &Event) {
        match self.format {
            EventsFormat::Quiet => {}
            EventsFormat::Json => print_json(event),
            EventsFormat::Human => {
                let who = event.worker();
                self.line(who, &describe(event));
            }
        }
    }

    /// Prints an event of the lesson's own: `{"event": kind, ...fields}` in
    /// JSON mode (`fields` must serialise to a JSON object), `human` otherwise.
    pub fn custom(&self, kind: &str, fields: &impl Serialize, human: &str) {
        match self.format {
            EventsFormat::Quiet => {}
            EventsFormat::Json => {
                let mut value = serde_json::to_value(fields).unwrap_or(serde_json::Value::Null);
                if let serde_json::Value::Object(map) = &mut value {
                    map.insert("event".into(), kind.into());
                }
                print_json(&value);
            }
            EventsFormat::Human => self.line(None, human),
        }
    }

    /// Prints a line for people; in JSON mode it goes to stderr so that
    /// stdout stays machine-readable.
    pub fn note(&self, text: &str) {
        match self.format {
            EventsFormat::Json | EventsFormat::Quiet => stderr_line(&format!("[primary] {text}")),
            EventsFormat::Human => self.line(None, text),
        }
    }

    fn line(&self, who: Option<WorkerId>, text: &str) {
        let prefix = match who {
            Some(id) => format!("worker {id}"),
            None => "primary".to_string(),
        };
        let mut out = std::io::stdout().lock();
        // A report of several lines keeps the column: later lines get an
        // empty prefix, so the log still reads as one column of who-said-what.
        for (n, line) in text.lines().enumerate() {
            let prefix = if n == 0 { prefix.as_str() } else { "" };
            // A closed stdout (a pager quit early) is no reason to stop serving.
            let _ = if self.colour {
                writeln!(out, "\x1b[{}m{prefix:>9} │\x1b[0m {line}", colour_of(who))
            } else {
                writeln!(out, "{prefix:>9} │ {line}")
            };
        }
    }
}

/// Writes `text` and a newline to stderr in one `write`. Every worker and
/// the primary share one stderr; `eprintln!` writes a line in pieces, and
/// another process's line can land between them. One write of a line under
/// the pipe's atomic size (4 KiB) arrives whole.
pub fn stderr_line(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    // Nowhere to report a failure to write to stderr.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn print_json(value: &impl Serialize) {
    if let Ok(line) = serde_json::to_string(value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The ANSI colour of a worker's prefix: the primary is bold, workers cycle
/// through six colours so neighbours differ.
fn colour_of(who: Option<WorkerId>) -> String {
    match who {
        None => "1".to_string(),
        Some(WorkerId(id)) => format!("{}", 31 + (id.saturating_sub(1) % 6)),
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Start {
            pid,
            addr,
            sched,
            workers,
        } => format!(
            "pid {pid}: starting {workers} worker{} on http://{addr} ({sched} scheduling)",
            plural(*workers)
        ),
        Event::Fork {
            pid, generation, ..
        } => format!("forked (pid {pid}, generation {generation})"),
        Event::Online { .. } => "online".to_string(),
        Event::Listening { addr, .. } => format!("listening on {addr}"),
        Event::Ready { .. } => "ready: takes connections".to_string(),
        Event::Draining { reason, .. } => {
            format!("draining ({reason}): out of rotation, finishing what it has")
        }
        Event::Message { body, .. } => format!("message: {body}"),
        Event::Disconnect { .. } => "disconnected".to_string(),
        Event::Exit {
            code,
            signal,
            reason,
            ..
        } => exited(*code, signal.as_deref(), *reason),
        Event::RestartScheduled { delay_ms, .. } => {
            format!("will be replaced in {delay_ms} ms")
        }
        Event::GaveUp {
            restarts,
            window_ms,
            cause,
        } => gave_up(*restarts, *window_ms, *cause),
        Event::Scale { from, to } => format!("desired workers: {from} → {to}"),
        Event::Capacity { ready: 0, desired } => format!(
            "no worker is ready (of {desired} wanted): new connections wait in the accept queue"
        ),
        Event::Capacity { ready, desired } => {
            format!("{ready} of {desired} workers ready again: serving")
        }
        Event::Unhealthy { reason, detail, .. } => unhealthy(*reason, detail),
        Event::RolloutStarted {
            generation,
            workers,
        } => format!(
            "rolling restart to generation {generation}: {workers} worker{} to replace, one at a time",
            plural(*workers)
        ),
        Event::Replaced {
            old,
            reason,
            ready_ms,
            drained_ms,
            ..
        } => replaced(*old, *reason, *ready_ms, *drained_ms),
        Event::RolledBack { old, why, .. } => {
            format!("rolled back: {why}; worker {old} keeps serving")
        }
        Event::RolloutFinished {
            generation,
            outcome,
            replaced,
            restored,
            took_ms,
        } => rollout_finished(*generation, *outcome, replaced, restored, *took_ms),
        Event::RolloutIgnored { running } => {
            format!("rolling restart refused: the one to generation {running} is still running")
        }
        Event::NoRollingRestart { signal } => {
            format!("{signal}: ignored, this program has no rolling restart (lesson 08 writes one)")
        }
        Event::Shutdown { reason } => format!("shutting down ({reason})"),
    }
}

fn exited(code: Option<i32>, signal: Option<&str>, reason: ExitReason) -> String {
    let how = match (code, signal) {
        (_, Some(signal)) => format!("killed by {signal}"),
        (Some(code), None) => format!("exited with code {code}"),
        (None, None) => "exited".to_string(),
    };
    format!("{how} ({reason})")
}

fn gave_up(restarts: u32, window_ms: u64, cause: GaveUpCause) -> String {
    let what = match cause {
        GaveUpCause::Crashes => "workers keep crashing",
        GaveUpCause::Health => "workers keep failing their health checks",
    };
    format!(
        "gave up: {restarts} restarts within {} s — {what}, fix the cause and start again",
        window_ms / 1000
    )
}

fn unhealthy(reason: HealthReason, detail: &str) -> String {
    let what = match reason {
        HealthReason::NotReady => "not ready",
        HealthReason::Hung => "hung",
        HealthReason::OverMemory => "over memory",
    };
    format!("unhealthy ({what}): {detail}")
}

fn replaced(old: WorkerId, reason: ExitReason, ready_ms: u64, drained_ms: u64) -> String {
    let why = match reason {
        ExitReason::Replaced => String::new(),
        other => format!(", which was {other}"),
    };
    format!(
        "replaced worker {old}{why}: ready after {ready_ms} ms, worker {old} drained in {drained_ms} ms"
    )
}

fn rollout_finished(
    generation: u32,
    outcome: RolloutOutcome,
    replaced: &[[WorkerId; 2]],
    restored: &[[WorkerId; 2]],
    took_ms: u64,
) -> String {
    let back = match restored {
        [] => String::new(),
        restored => format!("; then replaced back {}", pairs(restored)),
    };
    format!(
        "rolling restart to generation {generation} {outcome} in {took_ms} ms; replaced {}{back}",
        pairs(replaced)
    )
}

/// `1→5, 2→6`, or `none`.
fn pairs(list: &[[WorkerId; 2]]) -> String {
    if list.is_empty() {
        return "none".to_string();
    }
    let pairs: Vec<String> = list
        .iter()
        .map(|[old, new]| format!("{old}→{new}"))
        .collect();
    pairs.join(", ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Turns a lesson's result into its exit status, printing an error as one
/// line (`error: what failed: why`) rather than a debug dump.
pub fn exit_code<E: fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` renders an anyhow chain on one line.
            stderr_line(&format!("error: {error:#}"));
            ExitCode::FAILURE
        }
    }
}
