//! Scenario scripts: one TOML file per story a lesson tells.
//!
//! A script is read completely, and checked completely, before anything
//! runs: a typo found halfway through a two-minute scenario wastes the two
//! minutes. Every mistake is reported as `file:line: what is wrong`, pointing
//! at the key that is wrong, so a reader can fix a script without reading
//! this module.
//!
//! ```toml
//! title = "Four workers share one port"
//! args = ["--workers", "4"]         # the runner adds --port 0 --events json
//!
//! [[step]]
//! wait = "listening"                # an event kind, counted since the last action
//! count = 4
//!
//! [[step]]
//! load = "main"                     # a named load run
//! requests = 200
//! connections = 4
//!
//! [[step]]
//! expect = "load.main.failed == 0"  # a check; see `check.rs`
//! ```
//!
//! A script runs the lesson's Rust binary unless it names a Node twin, the
//! usual answer run in Node itself (`lessons/NN-*/node/FILE`), which takes
//! the same flags and prints the same events. `redis = true` gives the run a
//! private redis-server, its address in `REDIS_URL`, that `redis` steps can
//! stop and start again:
//!
//! ```toml
//! title = "The usual rolling restart, in Node"
//! node = "usual.js"                 # lessons/08-*/node/usual.js
//! redis = true                      # a private redis-server for this run
//!
//! [[step]]
//! redis = "stop"                    # an outage; "start" ends it
//!
//! [[step]]
//! wait = "exit"
//! none = true                       # the check: no exit within the time
//! within = "8s"
//! ```
//!
//! Every run has a private folder, named `{dir}` in `args`; `[[step]]
//! touch = "db-down"` creates an empty file in it and `remove = "db-down"`
//! deletes it, for a lesson that watches a file as its stand-in for a
//! dependency (`args = ["--database-down-if", "{dir}/db-down"]`).
//!
//! `[[step]] sample = "memory"` notes each live worker's resident memory,
//! for the side-by-side tables of `just compare`. `[[step]] pause = "1.5s"`
//! lets time pass while a fault lasts (never to wait for an event).
//!
//! A background load can run through a story and stop when it is over:
//!
//! ```toml
//! [[step]]
//! load = "during"
//! background = true
//! until = "rollout_finished"        # stop sending once this event arrives
//! requests = 1000000                # still bounded: a count …
//! max_time = "30s"                  # … and a time
//! ```
//!
//! Every event a script names — `wait`, `until`, `matching`'s fields, the
//! events in a check — must be one the program can print: the
//! supervisor's own or one its lesson reports (see [`crate::vocabulary`]),
//! so `wait = "raedy"` is refused when the script is read.
//!
//! Each `[[step]]` does one thing, named by its first key; the other keys
//! are that action's options. Steps are read by hand rather than through a
//! derived enum because serde's untagged enums lose every useful error, and
//! a key-by-key reading can name the exact line of an unknown option.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;
use toml::Spanned;

use crate::check::Check;
use crate::load::LoadSpec;
use crate::vocabulary::Vocabulary;

/// How long a `wait`, `await`, `wait_exit` or `request` step may take when
/// the script does not say: generous, because CI machines are slow, and a
/// bound, because a scenario must never hang.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(20);

/// A scenario script, checked and ready to run.
#[derive(Debug, Clone)]
pub struct Script {
    /// Where it was read from.
    pub path: PathBuf,
    /// The file name without `.toml`: also the snapshot's name.
    pub name: String,
    /// One line saying what the scenario shows.
    pub title: String,
    /// The lesson's flags; the runner adds `--port 0 --host 127.0.0.1
    /// --events json`.
    pub args: Vec<String>,
    /// What runs: the lesson's binary or its Node twin.
    pub program: Program,
    /// The run gets a private redis-server (`REDIS_URL`).
    pub redis: bool,
    /// A side-by-side comparison's own settings (`scenarios/compare/*.toml`),
    /// read by [`crate::compare`]; scenario scripts have none.
    pub compare: Option<toml::Table>,
    pub steps: Vec<Step>,
}

/// What a script runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The lesson's own binary.
    Lesson,
    /// A Node twin: this file in the lesson's `node/` folder.
    Node(String),
}

/// One step and the line it starts on.
#[derive(Debug, Clone)]
pub struct Step {
    pub line: usize,
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// A line of narration for the transcript.
    Say(String),
    /// Wait until `count` events of kind `event` (matching every `matching`
    /// field) have arrived since the last action step began — or, with
    /// `none`, check that not one arrives for all of `within`: how a script
    /// says that something hangs.
    Wait {
        event: String,
        count: u64,
        matching: Vec<(String, serde_json::Value)>,
        within: Duration,
        none: bool,
    },
    /// Put load on the cluster; `background` runs it while later steps go on
    /// until an `await` step collects it; `until` stops sending once an
    /// event of that kind arrives (still bounded by `requests` and
    /// `max_time`).
    Load {
        name: String,
        spec: LoadSpec,
        background: bool,
        until: Option<String>,
    },
    /// Wait for a background load to finish.
    Await { name: String, within: Duration },
    /// One GET on a new connection, remembered under `name`.
    Request {
        name: String,
        path: String,
        within: Duration,
    },
    /// A signal to the primary.
    Signal(Signal),
    /// SIGKILL to the worker with this id.
    KillWorker(u32),
    /// Wait for the primary to exit.
    WaitExit { within: Duration },
    /// A check; `within` retries it until it holds or the time is up.
    Expect { check: Check, within: Duration },
    /// Stop or start the run's private redis-server.
    Redis(RedisAction),
    /// Note each live worker's resident memory, for `just compare`.
    SampleMemory,
    /// Create an empty file of this name in the run's private folder
    /// (`{dir}` in `args`): a fault the lesson watches for, such as a
    /// dependency that is down while the file exists.
    Touch(String),
    /// Remove that file again: the fault is over.
    Remove(String),
    /// Let time pass: for a fault that lasts a while (a stopped primary,
    /// an outage) or load that must run meanwhile — never to wait for
    /// something that announces itself with an event (`wait` does that).
    Pause(Duration),
}

/// What a `redis` step does to the run's private server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisAction {
    /// An outage: the server stops (its data goes with it).
    Stop,
    /// The server runs again, on the same address.
    Start,
}

impl Action {
    /// Actions change the cluster; `wait` counts events from the start of
    /// the latest one.
    pub fn is_action(&self) -> bool {
        !matches!(
            self,
            Action::Say(_)
                | Action::Wait { .. }
                | Action::Expect { .. }
                | Action::Await { .. }
                | Action::SampleMemory
                | Action::Pause(_)
        )
    }
}

/// A mistake in a script, with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl std::error::Error for ScriptError {}

/// The file as TOML sees it, before any step is understood.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    title: String,
    #[serde(default)]
    args: Vec<String>,
    node: Option<Spanned<String>>,
    #[serde(default)]
    redis: bool,
    compare: Option<toml::Table>,
    step: Vec<Spanned<RawStep>>,
}

type RawStep = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// The action keys, each with the options it takes.
const ACTIONS: &[(&str, &[&str])] = &[
    ("say", &[]),
    ("wait", &["count", "matching", "within", "none"]),
    (
        "load",
        &[
            "requests",
            "connections",
            "keep_alive",
            "path",
            "max_time",
            "timeout",
            "background",
            "until",
        ],
    ),
    ("await", &["within"]),
    ("request", &["path", "within"]),
    ("signal", &[]),
    ("kill_worker", &[]),
    ("wait_exit", &[]),
    ("expect", &["within"]),
    ("redis", &[]),
    ("sample", &[]),
    ("pause", &[]),
    ("touch", &[]),
    ("remove", &[]),
];

impl Script {
    /// Reads and checks the script at `path`. The lesson whose events it
    /// may name is the one its path names (`scenarios/08-…`,
    /// `lessons/08-…/exercises/…`); a path that names none may use the
    /// supervisor's events only.
    pub fn load(path: &Path) -> Result<Script, ScriptError> {
        Script::load_in(path, None)
    }

    /// [`Script::load`] for a script of lesson `lesson` (`"08"`) whatever
    /// its name: `scenario 08 --script /tmp/mine.toml`.
    pub fn load_for(path: &Path, lesson: &str) -> Result<Script, ScriptError> {
        Script::load_in(path, Some(lesson))
    }

    fn load_in(path: &Path, lesson: Option<&str>) -> Result<Script, ScriptError> {
        let source = std::fs::read_to_string(path).map_err(|error| ScriptError {
            path: path.to_owned(),
            line: 0,
            message: format!("cannot read the script: {error}"),
        })?;
        Script::parse_in(path, &source, lesson)
    }

    /// Checks `source` as if it had been read from `path`.
    pub fn parse(path: &Path, source: &str) -> Result<Script, ScriptError> {
        Script::parse_in(path, source, None)
    }

    fn parse_in(path: &Path, source: &str, lesson: Option<&str>) -> Result<Script, ScriptError> {
        let at = |span: std::ops::Range<usize>, message: String| ScriptError {
            path: path.to_owned(),
            line: line_of(source, span.start),
            message,
        };
        let raw: RawScript = toml::from_str(source).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            at(span, error.message().trim().to_owned())
        })?;
        if raw.step.is_empty() {
            return Err(at(0..0, "a script needs at least one [[step]]".into()));
        }
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        let program = match raw.node {
            None => Program::Lesson,
            Some(file) => {
                let span = file.span();
                Program::Node(node_file(file.into_inner()).map_err(|message| at(span, message))?)
            }
        };
        let vocabulary = Vocabulary::for_script(path, lesson, &program, raw.compare.is_some());
        let mut steps = Vec::with_capacity(raw.step.len());
        for step in raw.step {
            let span = step.span();
            let action = read_step(step.into_inner(), span.clone(), &vocabulary)
                .map_err(|(span, message)| at(span, message))?;
            if matches!(action, Action::Redis(_)) && !raw.redis {
                return Err(at(
                    span,
                    "a `redis` step needs `redis = true` at the top of the script".into(),
                ));
            }
            steps.push(Step {
                line: line_of(source, span.start),
                action,
            });
        }
        Ok(Script {
            path: path.to_owned(),
            name,
            title: raw.title,
            args: raw.args,
            program,
            redis: raw.redis,
            compare: raw.compare,
            steps,
        })
    }
}

/// `node = "usual.js"`: a file in the lesson's `node/` folder, nowhere else.
fn node_file(file: String) -> Result<String, String> {
    if file.is_empty() || file.contains('/') || !file.ends_with(".js") {
        return Err(format!(
            "`node` names a .js file in the lesson's node/ folder, like \"usual.js\", not {file:?}"
        ));
    }
    Ok(file)
}

/// 1-based line of byte `offset` in `source`.
fn line_of(source: &str, offset: usize) -> usize {
    source
        .get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

type StepError = (std::ops::Range<usize>, String);

/// The options of one step, taken one by one; whatever is left at the end
/// is an unknown key.
struct Options {
    action: &'static str,
    values: BTreeMap<String, (std::ops::Range<usize>, Spanned<toml::Value>)>,
}

impl Options {
    fn take(&mut self, key: &str) -> Option<Spanned<toml::Value>> {
        self.values.remove(key).map(|(_, value)| value)
    }

    /// Where the value of `key` is, for a mistake found after it was read.
    fn span_of(&self, key: &str) -> Option<std::ops::Range<usize>> {
        self.values.get(key).map(|(_, value)| value.span())
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, StepError> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => match value.get_ref() {
                toml::Value::String(s) => Ok(Some(s.clone())),
                other => Err((
                    value.span(),
                    format!("`{key}` must be a string, not {}", other.type_str()),
                )),
            },
        }
    }

    fn count(&mut self, key: &str) -> Result<Option<u64>, StepError> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => match value.get_ref() {
                toml::Value::Integer(n) if *n >= 0 => Ok(Some(*n as u64)),
                other => Err((
                    value.span(),
                    format!("`{key}` must be a whole number ≥ 0, not {other}"),
                )),
            },
        }
    }

    fn flag(&mut self, key: &str) -> Result<Option<bool>, StepError> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => match value.get_ref() {
                toml::Value::Boolean(b) => Ok(Some(*b)),
                other => Err((
                    value.span(),
                    format!("`{key}` must be true or false, not {other}"),
                )),
            },
        }
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>, StepError> {
        let span = self.values.get(key).map(|(_, value)| value.span());
        match self.string(key)? {
            None => Ok(None),
            Some(text) => parse_duration(&text)
                .map(Some)
                .map_err(|message| (span.unwrap_or(0..0), format!("`{key}`: {message}"))),
        }
    }

    /// Fails on the first key nobody took.
    fn finish(self) -> Result<(), StepError> {
        let allowed = ACTIONS
            .iter()
            .find(|(name, _)| *name == self.action)
            .map(|(_, options)| *options)
            .unwrap_or_default();
        match self.values.into_iter().next() {
            None => Ok(()),
            Some((key, (span, _))) => Err((
                span,
                if allowed.is_empty() {
                    format!(
                        "unknown key `{key}`: a `{}` step takes no options",
                        self.action
                    )
                } else {
                    format!(
                        "unknown key `{key}` in a `{}` step; it takes: {}",
                        self.action,
                        allowed.join(", ")
                    )
                },
            )),
        }
    }
}

/// Reads one step: which action it is, then that action's options, each
/// action by its own reader below so each reads like the script it parses.
fn read_step(
    raw: RawStep,
    span: std::ops::Range<usize>,
    vocabulary: &Vocabulary,
) -> Result<Action, StepError> {
    let action = action_of(&raw, &span)?;
    let mut options = Options {
        action,
        values: raw
            .into_iter()
            .map(|(key, value)| (key.get_ref().clone(), (key.span(), value)))
            .collect(),
    };
    let at = options
        .values
        .get(action)
        .map_or(span, |(key_span, _)| key_span.clone());
    let parsed = match action {
        "say" => Action::Say(required_string(&mut options, "say", &at)?),
        "wait" => read_wait(&mut options, &at, vocabulary)?,
        "load" => read_load(&mut options, &at, vocabulary)?,
        "await" => Action::Await {
            name: required_string(&mut options, "await", &at)?,
            within: options.duration("within")?.unwrap_or(DEFAULT_WITHIN),
        },
        "request" => Action::Request {
            name: required_string(&mut options, "request", &at)?,
            path: options.string("path")?.unwrap_or_else(|| "/".into()),
            within: options.duration("within")?.unwrap_or(DEFAULT_WITHIN),
        },
        "signal" => {
            let name = required_string(&mut options, "signal", &at)?;
            Action::Signal(parse_signal(&name).map_err(|message| (at.clone(), message))?)
        }
        "kill_worker" => read_kill_worker(&mut options, at)?,
        "wait_exit" => Action::WaitExit {
            within: required_duration(&mut options, "wait_exit", &at)?,
        },
        "expect" => read_expect(&mut options, &at, vocabulary)?,
        "pause" => Action::Pause(required_duration(&mut options, "pause", &at)?),
        "sample" => read_sample(&mut options, at)?,
        "redis" => read_redis(&mut options, at)?,
        "touch" | "remove" => read_file_fault(&mut options, action, at)?,
        other => unreachable!("ACTIONS lists {other} without a reader"),
    };
    options.finish()?;
    Ok(parsed)
}

/// The one action key of a step: none, or two, is the script's mistake.
fn action_of(raw: &RawStep, span: &std::ops::Range<usize>) -> Result<&'static str, StepError> {
    let kinds: Vec<&'static str> = ACTIONS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| raw.keys().any(|key| key.get_ref() == name))
        .collect();
    match kinds.as_slice() {
        [one] => Ok(*one),
        [] => {
            let names: Vec<&str> = ACTIONS.iter().map(|(name, _)| *name).collect();
            let first = raw.keys().next().map_or(span.clone(), |key| key.span());
            Err((
                first,
                format!("a step needs one action key: one of {}", names.join(", ")),
            ))
        }
        [first, second, ..] => Err((
            span.clone(),
            format!(
                "a step does one thing, but this one has both `{first}` and `{second}`: split it"
            ),
        )),
    }
}

/// `wait = "kind"`: the kind and the `matching` fields are checked against
/// the events there are, so a typo fails here and not as a wait that times
/// out.
fn read_wait(
    options: &mut Options,
    at: &std::ops::Range<usize>,
    vocabulary: &Vocabulary,
) -> Result<Action, StepError> {
    let event = required_string(options, "wait", at)?;
    vocabulary
        .kind(&event)
        .map_err(|message| (at.clone(), message))?;
    let count = options.count("count")?.unwrap_or(1);
    let matching_at = options.span_of("matching").unwrap_or_else(|| at.clone());
    let matching = matching(options)?;
    for (path, _) in &matching {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        vocabulary
            .field(&event, &path)
            .map_err(|message| (matching_at.clone(), format!("`matching`: {message}")))?;
    }
    Ok(Action::Wait {
        event,
        count,
        matching,
        within: options.duration("within")?.unwrap_or(DEFAULT_WITHIN),
        none: options.flag("none")?.unwrap_or(false),
    })
}

/// `load = "name"`: the load generator's settings, defaults where the
/// script says nothing, and the event (`until`) that ends it early.
fn read_load(
    options: &mut Options,
    at: &std::ops::Range<usize>,
    vocabulary: &Vocabulary,
) -> Result<Action, StepError> {
    let name = required_string(options, "load", at)?;
    let defaults = LoadSpec::default();
    let spec = LoadSpec {
        requests: options.count("requests")?.unwrap_or(defaults.requests),
        connections: options
            .count("connections")?
            .map_or(defaults.connections, |c| c.max(1) as usize),
        keep_alive: options.flag("keep_alive")?.unwrap_or(defaults.keep_alive),
        path: options.string("path")?.unwrap_or(defaults.path),
        max_time: options.duration("max_time")?.unwrap_or(defaults.max_time),
        timeout: options.duration("timeout")?.unwrap_or(defaults.timeout),
        ..LoadSpec::default()
    };
    let until_at = options.span_of("until");
    let until = options.string("until")?;
    if let Some(kind) = &until {
        vocabulary.kind(kind).map_err(|message| {
            (
                until_at.unwrap_or_else(|| at.clone()),
                format!("`until`: {message}"),
            )
        })?;
    }
    Ok(Action::Load {
        name,
        spec,
        background: options.flag("background")?.unwrap_or(false),
        until,
    })
}

/// `expect = "check"`: parsed now, its events' names checked now.
fn read_expect(
    options: &mut Options,
    at: &std::ops::Range<usize>,
    vocabulary: &Vocabulary,
) -> Result<Action, StepError> {
    let text = required_string(options, "expect", at)?;
    let check = Check::parse(&text).map_err(|message| (at.clone(), message))?;
    for (kind, path) in check.events() {
        vocabulary
            .field(kind, path)
            .map_err(|message| (at.clone(), message))?;
    }
    Ok(Action::Expect {
        check,
        within: options.duration("within")?.unwrap_or(Duration::ZERO),
    })
}

/// `kill_worker = 2`: worker ids start at 1.
fn read_kill_worker(
    options: &mut Options,
    at: std::ops::Range<usize>,
) -> Result<Action, StepError> {
    match options.count("kill_worker")? {
        Some(id) if id >= 1 && id <= u64::from(u32::MAX) => Ok(Action::KillWorker(id as u32)),
        _ => Err((at, "`kill_worker` needs a worker id (1, 2, …)".into())),
    }
}

/// `sample = "memory"`, the one thing there is to sample.
fn read_sample(options: &mut Options, at: std::ops::Range<usize>) -> Result<Action, StepError> {
    match required_string(options, "sample", &at)?.as_str() {
        "memory" => Ok(Action::SampleMemory),
        other => Err((at, format!("`sample` takes \"memory\", not {other:?}"))),
    }
}

/// `redis = "stop"` or `"start"`.
fn read_redis(options: &mut Options, at: std::ops::Range<usize>) -> Result<Action, StepError> {
    match required_string(options, "redis", &at)?.as_str() {
        "stop" => Ok(Action::Redis(RedisAction::Stop)),
        "start" => Ok(Action::Redis(RedisAction::Start)),
        other => Err((
            at,
            format!("`redis` takes \"stop\" or \"start\", not {other:?}"),
        )),
    }
}

/// `touch`/`remove = "db-down"`: a plain name, so the file stays inside the
/// run's private folder.
fn read_file_fault(
    options: &mut Options,
    action: &'static str,
    at: std::ops::Range<usize>,
) -> Result<Action, StepError> {
    let name = required_string(options, action, &at)?;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err((
            at,
            format!(
                "`{action}` names a file in the run's private folder, like \"db-down\", not {name:?}"
            ),
        ));
    }
    Ok(if action == "touch" {
        Action::Touch(name)
    } else {
        Action::Remove(name)
    })
}

/// The value of `key`, a duration, which the action cannot do without.
fn required_duration(
    options: &mut Options,
    key: &str,
    at: &std::ops::Range<usize>,
) -> Result<Duration, StepError> {
    let text = required_string(options, key, at)?;
    parse_duration(&text).map_err(|message| (at.clone(), format!("`{key}`: {message}")))
}

fn required_string(
    options: &mut Options,
    key: &str,
    span: &std::ops::Range<usize>,
) -> Result<String, StepError> {
    options
        .string(key)?
        .ok_or_else(|| (span.clone(), format!("`{key}` needs a value")))
}

/// `matching = { exited_after_disconnect = true, "body.role" = "worker" }`
fn matching(options: &mut Options) -> Result<Vec<(String, serde_json::Value)>, StepError> {
    let Some(value) = options.take("matching") else {
        return Ok(Vec::new());
    };
    let span = value.span();
    let toml::Value::Table(table) = value.into_inner() else {
        return Err((span, "`matching` must be a table of field = value".into()));
    };
    table
        .into_iter()
        .map(|(key, value)| {
            serde_json::to_value(&value)
                .map(|json| (key.clone(), json))
                .map_err(|error| (span.clone(), format!("`matching.{key}`: {error}")))
        })
        .collect()
}

/// `"10s"`, `"500ms"`, `"1.5s"`: a unit is required (a bare `5` could be
/// seconds or milliseconds to a reader), and a step waits an hour at most.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if !text.trim().ends_with('s') {
        return Err(format!(
            "{text:?} is not a duration: write it like \"500ms\" or \"10s\""
        ));
    }
    supervisor::cli::duration_from(text, Duration::from_secs(3600), false).ok_or_else(|| {
        format!(
            "{text:?} is not a duration between 0 and one hour: write it like \"500ms\" or \"10s\""
        )
    })
}

fn parse_signal(name: &str) -> Result<Signal, String> {
    let full = if name.starts_with("SIG") {
        name.to_owned()
    } else {
        format!("SIG{name}")
    };
    full.parse::<Signal>()
        .map_err(|_| format!("unknown signal {name:?}: use a name like SIGTERM or SIGINT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str) -> Result<Script, ScriptError> {
        Script::parse(Path::new("scenarios/99-test.toml"), source)
    }

    fn error(source: &str) -> String {
        match parse(source) {
            Ok(script) => panic!("expected an error, got {script:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_good_script_reads_every_step() -> Result<(), ScriptError> {
        let script = parse(
            r#"title = "t"
args = ["--workers", "2"]

[[step]]
wait = "listening"
count = 2

[[step]]
load = "main"
requests = 10
keep_alive = true

[[step]]
expect = "load.main.failed == 0"
within = "2s"

[[step]]
signal = "TERM"

[[step]]
wait_exit = "5s"
"#,
        )?;
        assert_eq!(script.name, "99-test");
        assert_eq!(script.args, ["--workers", "2"]);
        let lines: Vec<usize> = script.steps.iter().map(|step| step.line).collect();
        assert_eq!(lines, [4, 8, 13, 17, 20]);
        assert!(matches!(
            &script.steps[0].action,
            Action::Wait { count: 2, .. }
        ));
        assert!(
            matches!(&script.steps[1].action, Action::Load { spec, .. } if spec.requests == 10 && spec.keep_alive)
        );
        assert!(matches!(
            script.steps[3].action,
            Action::Signal(Signal::SIGTERM)
        ));
        Ok(())
    }

    #[test]
    fn an_unknown_option_names_its_line() {
        let message = error("title = \"t\"\n[[step]]\nload = \"x\"\nreqests = 3\n");
        assert_eq!(
            message,
            "scenarios/99-test.toml:4: unknown key `reqests` in a `load` step; it takes: \
             requests, connections, keep_alive, path, max_time, timeout, background, until"
        );
    }

    #[test]
    fn an_unknown_action_and_an_unknown_top_level_key_are_named() {
        let message = error("title = \"t\"\n[[step]]\nsleep = \"1s\"\n");
        assert!(
            message.starts_with("scenarios/99-test.toml:3: a step needs one action key"),
            "{message}"
        );
        let message = error("title = \"t\"\ntitel = \"u\"\n[[step]]\nsay = \"hi\"\n");
        assert!(
            message.starts_with("scenarios/99-test.toml:2: unknown field `titel`"),
            "{message}"
        );
    }

    #[test]
    fn two_actions_in_one_step_are_refused() {
        let message = error("title = \"t\"\n[[step]]\nsay = \"a\"\nsignal = \"TERM\"\n");
        assert!(message.contains("both `say` and `signal`"), "{message}");
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let message = error("title = \"t\"\n[[step]]\nwait = \"fork\"\nwithin = \"ten\"\n");
        assert!(
            message.starts_with("scenarios/99-test.toml:4: `within`:"),
            "{message}"
        );
        let message = error("title = \"t\"\n[[step]]\nsignal = \"SIGNOPE\"\n");
        assert!(message.contains("unknown signal"), "{message}");
        let message = error("title = \"t\"\n[[step]]\nexpect = \"load.x.ok =\"\n");
        assert!(
            message.starts_with("scenarios/99-test.toml:3:"),
            "{message}"
        );
    }

    #[test]
    fn touch_and_remove_name_a_file_in_the_run_s_folder() -> Result<(), ScriptError> {
        let script = parse(
            "title = \"t\"\nargs = [\"--down-if\", \"{dir}/db-down\"]\n[[step]]\ntouch = \"db-down\"\n[[step]]\nremove = \"db-down\"\n",
        )?;
        assert!(matches!(&script.steps[0].action, Action::Touch(name) if name == "db-down"));
        assert!(matches!(&script.steps[1].action, Action::Remove(name) if name == "db-down"));
        // Actions: a `wait` after them counts only what follows.
        assert!(script.steps.iter().all(|step| step.action.is_action()));
        let message = error("title = \"t\"\n[[step]]\ntouch = \"/tmp/db-down\"\n");
        assert!(
            message.contains(":3:") && message.contains("private folder"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn a_node_twin_and_its_redis_are_read() -> Result<(), ScriptError> {
        let script = parse(
            "title = \"t\"\nnode = \"usual.js\"\nredis = true\n[[step]]\nredis = \"stop\"\n[[step]]\nwait = \"exit\"\nnone = true\nwithin = \"1s\"\n",
        )?;
        assert_eq!(script.program, Program::Node("usual.js".into()));
        assert!(script.redis);
        assert!(matches!(
            script.steps[0].action,
            Action::Redis(RedisAction::Stop)
        ));
        assert!(matches!(
            script.steps[1].action,
            Action::Wait { none: true, .. }
        ));
        Ok(())
    }

    #[test]
    fn a_redis_step_needs_a_redis_and_a_twin_needs_a_js_file() {
        let message = error("title = \"t\"\n[[step]]\nredis = \"stop\"\n");
        assert!(message.contains("needs `redis = true`"), "{message}");
        let message = error("title = \"t\"\nredis = true\n[[step]]\nredis = \"pause\"\n");
        assert!(message.contains("takes \"stop\" or \"start\""), "{message}");
        let message = error("title = \"t\"\nnode = \"../x.js\"\n[[step]]\nsay = \"hi\"\n");
        assert!(
            message.starts_with("scenarios/99-test.toml:2:"),
            "{message}"
        );
    }

    /// Writes `source` to a temporary file named `name` and loads it, as
    /// `scenario --script` does.
    fn load_temp(name: &str, source: &str) -> (PathBuf, Result<Script, ScriptError>) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join(name);
        std::fs::write(&path, source).expect("the script is written");
        let loaded = Script::load(&path);
        (path, loaded)
    }

    fn load_error(name: &str, source: &str) -> String {
        match load_temp(name, source) {
            (_, Ok(script)) => panic!("expected an error, got {script:?}"),
            (path, Err(error)) => error
                .to_string()
                .replace(&path.display().to_string(), "SCRIPT"),
        }
    }

    #[test]
    fn an_unknown_event_is_refused_with_its_line() {
        let message = load_error(
            "99-bad.toml",
            "title = \"t\"\n\n[[step]]\nwait = \"listening\"\n\n[[step]]\nwait = \"raedy\"\n",
        );
        // Lesson 99 does not exist: the supervisor's events are all there is.
        let known = crate::vocabulary::supervisor_kinds().join(", ");
        assert!(known.starts_with("start, fork, online, listening, ready, draining"));
        assert_eq!(
            message,
            format!("SCRIPT:7: unknown event \"raedy\" (known: {known})")
        );
    }

    #[test]
    fn an_unknown_field_of_a_supervisor_event_is_refused() {
        let message = load_error(
            "99-bad.toml",
            "title = \"t\"\n[[step]]\nwait_exit = \"5s\"\n[[step]]\nexpect = \"last(exit.cdoe) == 0\"\n",
        );
        assert_eq!(
            message,
            "SCRIPT:5: unknown field \"cdoe\" of the supervisor's \"exit\" event \
             (its fields: code, event, exited_after_disconnect, id, pid, reason, signal)"
        );
        let message = load_error(
            "99-bad.toml",
            "title = \"t\"\n[[step]]\nwait = \"exit\"\nmatching = { exited_after_disconect = true }\n",
        );
        assert!(
            message.starts_with(
                "SCRIPT:4: `matching`: unknown field \"exited_after_disconect\" of the supervisor's \"exit\" event"
            ),
            "{message}"
        );
        let message = load_error(
            "99-bad.toml",
            "title = \"t\"\n[[step]]\nload = \"x\"\nbackground = true\nuntil = \"rollout_finsihed\"\n",
        );
        assert!(
            message.starts_with("SCRIPT:5: `until`: unknown event \"rollout_finsihed\" (known: "),
            "{message}"
        );
    }

    #[test]
    fn a_lesson_s_own_records_are_known_and_their_typos_are_not() {
        // `rollout_report` is lesson 08's own record (`cluster.report`).
        let (_, loaded) = load_temp(
            "08-mine.toml",
            "title = \"t\"\n[[step]]\nwait = \"rollout_report\"\n[[step]]\nexpect = \"last(rollout_report.anything.at.all) == 1\"\n",
        );
        assert!(loaded.is_ok(), "{loaded:?}");
        let message = load_error(
            "08-mine.toml",
            "title = \"t\"\n[[step]]\nwait = \"rollout_reprot\"\n",
        );
        assert!(
            message.starts_with("SCRIPT:3: unknown event \"rollout_reprot\" (known: start, "),
            "{message}"
        );
        assert!(message.contains("rollout_report"), "{message}");
    }

    #[test]
    fn every_script_in_the_workbook_loads() {
        let root = crate::workspace_root();
        let mut scripts = Vec::new();
        for dir in ["scenarios", "scenarios/compare", "scenarios/timeline"] {
            scripts.extend(
                tomls(&root.join(dir))
                    .into_iter()
                    .filter(|path| !path.ends_with("Cargo.toml")),
            );
        }
        for lesson in std::fs::read_dir(root.join("lessons")).expect("lessons/ is listed") {
            let exercises = lesson.expect("a lesson folder").path().join("exercises");
            // exercises.toml is the lesson's manifest, not a script.
            scripts.extend(
                tomls(&exercises)
                    .into_iter()
                    .filter(|path| !path.ends_with("exercises.toml")),
            );
        }
        assert!(scripts.len() > 150, "only {} scripts found", scripts.len());
        let broken: Vec<String> = scripts
            .iter()
            .filter_map(|path| Script::load(path).err())
            .map(|error| error.to_string())
            .collect();
        assert!(broken.is_empty(), "{}", broken.join("\n"));
    }

    fn tomls(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
