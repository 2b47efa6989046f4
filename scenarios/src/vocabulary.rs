//! The event names a script may use, known before anything runs.
//!
//! A script names events in `wait = "ready"`, `until = "rollout_finished"`,
//! `matching = { reason = "crashed" }` and checks like `last(exit.code)`. A
//! typo there (`wait = "raedy"`) used to load fine and fail twenty seconds
//! later, as a wait that timed out, which reads like a bug in the lesson. So
//! every such name is checked when the script is read, against two lists:
//!
//! - the supervisor's own events: the tags of [`supervisor::Event`], taken
//!   from the type itself (its `Deserialize` names them all, see
//!   [`supervisor_kinds`]), and the fields of each, taken from serialising
//!   one value of every variant ([`samples`]). Both follow the type, so
//!   they cannot drift from it: a field added to a variant stops
//!   [`samples`] compiling, a variant added without a sample fails a test.
//! - the lesson's own records, `cluster.report("kind", …)` and
//!   `reporter.custom("kind", …)` in its Rust sources, `twin.emit('kind', …)`
//!   in its Node twin's. These are found by reading the sources when the
//!   script is loaded, rather than kept in a table here, so a lesson that
//!   adds a record can use it in a script at once; see [`scan`] for what
//!   the reading understands.
//!
//! A lesson record's fields are not checked: they are whatever JSON the
//! lesson builds (`json!({...})`, a struct, a forwarded message), which no
//! reading of the source short of compiling it can list. A supervisor
//! event's first field is checked (`exit.cdoe` is refused); what lies
//! below it (`message.body.role`, `rollout_finished.replaced.0`) is free
//! JSON or an index, and is not.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use supervisor::{
    Event, ExitReason, GaveUpCause, HealthReason, RolloutOutcome, Sched, StopReason, WorkerId,
};

use crate::script::Program;

/// What one script may name: the supervisor's events always, and the
/// records of the lesson it belongs to, if it belongs to one.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    /// Kinds the lesson reports itself.
    records: BTreeSet<String>,
    /// Kinds the lesson builds from a template (`${name}_client_closed`):
    /// the fixed pieces, a hole of one or more name characters between each.
    patterns: Vec<Vec<String>>,
}

impl Vocabulary {
    /// The supervisor's events only: for a script that belongs to no
    /// lesson (a test's made-up path).
    pub fn supervisor_only() -> Vocabulary {
        Vocabulary::default()
    }

    /// The vocabulary of a script at `path` that runs `program` (a
    /// comparison, `compare`, runs both the lesson and its twin). The
    /// lesson is `lesson` (`"08"`) if given, else the one the path names:
    /// `lessons/NN-*/exercises/…` or a file name starting `NN-`.
    pub fn for_script(
        path: &Path,
        lesson: Option<&str>,
        program: &Program,
        compare: bool,
    ) -> Vocabulary {
        let root = workspace_of(path);
        let Some(dir) = lesson_dir(&root, path, lesson) else {
            return Vocabulary::supervisor_only();
        };
        let mut files = Vec::new();
        if compare || *program == Program::Lesson {
            files.extend(files_under(&dir.join("src"), &["rs"]));
        }
        if compare || matches!(program, Program::Node(_)) {
            files.extend(files_under(&dir.join("node"), &["js", "cjs", "mjs"]));
            files.push(root.join("shared/node-twin/twin.js"));
        }
        let mut vocabulary = Vocabulary::default();
        for file in files {
            // A file that cannot be read names nothing; the script's
            // check then says which names it did not find.
            if let Ok(text) = std::fs::read_to_string(&file) {
                let rust = file.extension().is_some_and(|ext| ext == "rs");
                let found = scan(&text, rust);
                vocabulary.records.extend(found.kinds);
                vocabulary.patterns.extend(found.patterns);
            }
        }
        vocabulary
    }

    /// Checks an event kind; the error says which kinds there are.
    pub fn kind(&self, kind: &str) -> Result<(), String> {
        let known = supervisor_kinds().contains(&kind)
            || self.records.contains(kind)
            || self.patterns.iter().any(|pattern| fits(pattern, kind));
        if known {
            return Ok(());
        }
        let mut names: Vec<String> = supervisor_kinds().iter().map(|k| (*k).to_owned()).collect();
        names.extend(
            self.records
                .iter()
                .filter(|record| !supervisor_kinds().contains(&record.as_str()))
                .cloned(),
        );
        names.extend(self.patterns.iter().map(|pieces| pieces.join("*")));
        Err(format!(
            "unknown event {kind:?} (known: {})",
            names.join(", ")
        ))
    }

    /// Checks an event kind and, for a supervisor event, the first field
    /// of a dotted `path` into it (`exit` and `["code"]`).
    pub fn field(&self, kind: &str, path: &[String]) -> Result<(), String> {
        self.kind(kind)?;
        let (Some(first), Some(fields)) = (path.first(), supervisor_fields().get(kind)) else {
            return Ok(());
        };
        if fields.iter().any(|field| field == first) {
            return Ok(());
        }
        Err(format!(
            "unknown field {first:?} of the supervisor's {kind:?} event (its fields: {})",
            fields.join(", ")
        ))
    }
}

/// The tag of every variant of [`supervisor::Event`], in declaration order.
///
/// Asked of the type itself: its derived `Deserialize`, handed a tag it does
/// not know, reports the tags it does through `Error::unknown_variant`, and
/// [`Variants`] is an error type that keeps them. No value of each variant
/// is needed, so a new variant is known here the moment it exists.
pub fn supervisor_kinds() -> &'static [&'static str] {
    static KINDS: OnceLock<&'static [&'static str]> = OnceLock::new();
    KINDS.get_or_init(|| {
        let probe =
            serde::de::value::MapDeserializer::<_, Variants>::new(std::iter::once(("event", "")));
        match Event::deserialize(probe) {
            Err(Variants(Some(kinds))) => kinds,
            // serde no longer names the variants this way: the samples'
            // tags stand in (a test fails, so this is seen).
            _ => Vec::leak(
                samples()
                    .iter()
                    .map(|event| &*String::leak(tag(event)))
                    .collect(),
            ),
        }
    })
}

/// The fields of each supervisor event, the tag `event` among them, in
/// alphabetical order (serde_json's map keeps keys sorted).
fn supervisor_fields() -> &'static BTreeMap<String, Vec<String>> {
    static FIELDS: OnceLock<BTreeMap<String, Vec<String>>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        samples()
            .iter()
            .map(|event| {
                let fields = match serde_json::to_value(event) {
                    Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
                    _ => Vec::new(),
                };
                (tag(event), fields)
            })
            .collect()
    })
}

/// An event's tag, from its serialised form.
fn tag(event: &Event) -> String {
    serde_json::to_value(event)
        .ok()
        .and_then(|value| value["event"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// An error type for [`supervisor_kinds`]'s probe: it keeps the variant
/// names serde offers with an unknown variant, and nothing else.
#[derive(Debug)]
struct Variants(Option<&'static [&'static str]>);

impl std::fmt::Display for Variants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probing the supervisor's event names")
    }
}

impl std::error::Error for Variants {}

impl serde::de::Error for Variants {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Variants(None)
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Variants(Some(expected))
    }
}

/// One value of every supervisor event, for their field names.
///
/// Written as struct literals on purpose: a field added to a variant makes
/// this fail to compile until it is listed here, so the fields a script may
/// name never lag behind the type. Option fields hold `Some`, though `None`
/// serialises its key too.
pub fn samples() -> Vec<Event> {
    let mut samples = worker_samples();
    samples.extend(cluster_samples());
    samples
}

/// The events of one worker's life, fork to exit.
fn worker_samples() -> Vec<Event> {
    let id = WorkerId(1);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    vec![
        Event::Fork {
            id,
            pid: 1,
            generation: 1,
        },
        Event::Online { id },
        Event::Listening { id, addr },
        Event::Ready { id },
        Event::Draining {
            id,
            reason: ExitReason::Replaced,
        },
        Event::Message {
            id,
            body: serde_json::Value::Null,
        },
        Event::Disconnect { id },
        Event::Exit {
            id,
            pid: 1,
            code: Some(0),
            signal: Some("SIGTERM".into()),
            exited_after_disconnect: false,
            reason: ExitReason::Crashed,
        },
        Event::Unhealthy {
            id,
            reason: HealthReason::Hung,
            detail: String::new(),
            rss_mib: 0,
        },
    ]
}

/// The events about the cluster as a whole: its start, restarts, scaling,
/// rollouts and stop.
fn cluster_samples() -> Vec<Event> {
    let id = WorkerId(1);
    vec![
        Event::Start {
            pid: 1,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            sched: Sched::RoundRobin,
            workers: 1,
        },
        Event::RestartScheduled {
            after: id,
            delay_ms: 0,
        },
        Event::GaveUp {
            restarts: 0,
            window_ms: 0,
            cause: GaveUpCause::Crashes,
        },
        Event::Scale { from: 1, to: 1 },
        Event::Capacity {
            ready: 1,
            desired: 1,
        },
        Event::RolloutStarted {
            generation: 1,
            workers: 1,
        },
        Event::Replaced {
            old: id,
            new: id,
            reason: ExitReason::Replaced,
            ready_ms: 0,
            drained_ms: 0,
        },
        Event::RolledBack {
            old: id,
            new: id,
            why: String::new(),
        },
        Event::RolloutFinished {
            generation: 1,
            outcome: RolloutOutcome::Completed,
            replaced: Vec::new(),
            restored: Vec::new(),
            took_ms: 0,
        },
        Event::RolloutIgnored { running: 1 },
        Event::NoRollingRestart {
            signal: String::new(),
        },
        Event::Shutdown {
            reason: StopReason::Sigterm,
        },
    ]
}

/// The folder holding `scenarios/` and `lessons/` above `path`, or the
/// workspace this program runs in (a script written to /tmp).
fn workspace_of(path: &Path) -> PathBuf {
    path.ancestors()
        .skip(1)
        .find(|dir| {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.join("scenarios").is_dir() && dir.join("lessons").is_dir()
        })
        .map_or_else(crate::workspace_root, |dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.to_owned()
            }
        })
}

/// The lesson folder a script belongs to, if any.
fn lesson_dir(root: &Path, path: &Path, lesson: Option<&str>) -> Option<PathBuf> {
    // An exercise's script sits in its lesson's folder.
    if lesson.is_none()
        && let Some(exercises) = path.parent()
        && exercises
            .file_name()
            .is_some_and(|name| name == "exercises")
        && let Some(dir) = exercises.parent()
        && dir.join("src").is_dir()
    {
        return Some(dir.to_owned());
    }
    let nn = match lesson {
        Some(nn) => nn.to_owned(),
        None => {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let nn = name.get(..2)?;
            if !nn.bytes().all(|b| b.is_ascii_digit()) || name.as_bytes().get(2) != Some(&b'-') {
                return None;
            }
            nn.to_owned()
        }
    };
    let prefix = format!("{nn}-");
    std::fs::read_dir(root.join("lessons"))
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|dir| {
            dir.is_dir()
                && dir
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(&prefix))
        })
}

/// Every file under `dir` (recursively) ending in one of `extensions`.
fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for path in entries.filter_map(Result::ok).map(|entry| entry.path()) {
        if path.is_dir() {
            // A Node twin's node_modules holds no kinds of the lesson's.
            if path.file_name().is_some_and(|name| name != "node_modules") {
                found.extend(files_under(&path, extensions));
            }
        } else if path
            .extension()
            .is_some_and(|ext| extensions.iter().any(|wanted| ext == *wanted))
        {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// What [`scan`] found in one source file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub kinds: BTreeSet<String>,
    pub patterns: Vec<Vec<String>>,
}

/// The calls that print a lesson's own record, the kind first.
const REPORTERS: &[&str] = &["report(", "custom(", "emit("];

/// The record kinds a source file prints.
///
/// A kind is the first argument of a call to `report(`, `custom(` or
/// `emit(`: a string literal names one kind; a JS template literal
/// (`` `${name}_client_closed` ``) a pattern, its `${…}` holes standing for
/// any name. A first argument that is neither (`report(kind, …)`, a helper
/// or a forwarded message's `type`) names its kinds elsewhere in the same
/// file — as literals passed to the helper, or a list of the types
/// forwarded — so in such a file every literal that looks like a kind
/// (`snake_case`) counts. That is looser, and only where the file itself
/// forwards names; a typo still matches none of them.
pub fn scan(source: &str, rust: bool) -> Found {
    let pieces = pieces(source, rust);
    let mut found = Found::default();
    let mut forwards = false;
    for (at, piece) in pieces.iter().enumerate() {
        let Piece::Code(code) = piece else { continue };
        for reporter in REPORTERS {
            for (start, _) in code.match_indices(reporter) {
                let before = code[..start].trim_end();
                let called = before.ends_with('.')
                    || !before.ends_with(|c: char| c.is_alphanumeric() || c == '_');
                // A definition (`fn report(&self, kind …)`) is not a call.
                let defined = before.ends_with("fn") || before.ends_with("function");
                let name_start = code[..start]
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map_or(0, |i| i + 1);
                if !called || defined || name_start != start {
                    continue;
                }
                let rest = code[start + reporter.len()..].trim_start();
                if rest.starts_with(')') {
                    continue;
                }
                match (rest.is_empty(), pieces.get(at + 1)) {
                    (true, Some(Piece::Text { body, template })) => {
                        if *template && body.contains("${") {
                            found.patterns.push(template_pieces(body));
                        } else if looks_like_kind(body) {
                            found.kinds.insert((*body).to_owned());
                        }
                    }
                    _ => forwards = true,
                }
            }
        }
    }
    if forwards {
        for piece in &pieces {
            if let Piece::Text { body, .. } = piece
                && looks_like_kind(body)
            {
                found.kinds.insert((*body).to_owned());
            }
        }
    }
    found
}

fn looks_like_kind(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `${name}_client_closed` → `["", "_client_closed"]`.
fn template_pieces(body: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find("${") {
        pieces.push(rest[..open].to_owned());
        rest = rest[open..]
            .find('}')
            .map_or("", |close| &rest[open + close + 1..]);
    }
    pieces.push(rest.to_owned());
    pieces
}

/// True if `kind` is `pieces` with each gap filled by one or more name
/// characters.
fn fits(pieces: &[String], kind: &str) -> bool {
    let Some((first, others)) = pieces.split_first() else {
        return false;
    };
    let Some(mut rest) = kind.strip_prefix(first.as_str()) else {
        return false;
    };
    for (i, piece) in others.iter().enumerate() {
        let last = i + 1 == others.len();
        // The hole takes at least one character; the leftmost match of the
        // next piece leaves the most for the holes after it, and the last
        // piece must end the kind.
        let found = if last {
            rest.strip_suffix(piece.as_str())
                .filter(|hole| !hole.is_empty())
                .map(|hole| (hole, ""))
        } else {
            rest.get(1..)
                .and_then(|after| after.find(piece.as_str()).map(|i| i + 1))
                .map(|i| (&rest[..i], &rest[i + piece.len()..]))
        };
        let Some((hole, after)) = found else {
            return false;
        };
        if !hole.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return false;
        }
        rest = after;
    }
    true
}

/// A source file as code and string literals, comments dropped.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Code(&'a str),
    Text { body: &'a str, template: bool },
}

/// Splits `source` into code and literals: enough of Rust's and
/// JavaScript's lexical rules to find where strings start and end —
/// comments (an apostrophe in one is not a quote), escapes, Rust's raw
/// strings, char literals and lifetimes, JS's three quotes.
fn pieces<'a>(source: &'a str, rust: bool) -> Vec<Piece<'a>> {
    let bytes = source.as_bytes();
    let mut pieces = Vec::new();
    let mut code_start = 0;
    let mut i = 0;
    let push_code = |pieces: &mut Vec<Piece<'a>>, from: usize, to: usize| {
        if to > from {
            pieces.push(Piece::Code(&source[from..to]));
        }
    };
    while i < bytes.len() {
        let here = bytes[i];
        let next = bytes.get(i + 1).copied();
        let (end, text) = if here == b'/' && next == Some(b'/') {
            let end = source[i..].find('\n').map_or(bytes.len(), |n| i + n);
            (end, None)
        } else if here == b'/' && next == Some(b'*') {
            let end = source[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |n| i + 2 + n + 2);
            (end, None)
        } else if let Some(hashes) = (rust && here == b'r')
            .then(|| raw_string_at(bytes, i))
            .flatten()
        {
            let body_start = i + 1 + hashes + 1;
            let closing = format!("\"{}", "#".repeat(hashes));
            let body_end = source[body_start..]
                .find(&closing)
                .map_or(bytes.len(), |n| body_start + n);
            let end = (body_end + closing.len()).min(bytes.len());
            (end, Some((body_start, body_end, false)))
        } else if rust && here == b'\'' {
            // A char literal ('x', '\n', '"') or a lifetime ('a): only the
            // first is skipped whole, so its quote starts no string.
            match char_literal_end(source, i) {
                Some(end) => (end, None),
                None => {
                    i += 1;
                    continue;
                }
            }
        } else if here == b'"' || (!rust && (here == b'\'' || here == b'`')) {
            let body_end = closing_quote(bytes, i + 1, here);
            let end = (body_end + 1).min(bytes.len());
            (end, Some((i + 1, body_end, here == b'`')))
        } else {
            i += 1;
            continue;
        };
        push_code(&mut pieces, code_start, i);
        if let Some((from, to, template)) = text {
            pieces.push(Piece::Text {
                body: source.get(from..to).unwrap_or_default(),
                template,
            });
        }
        i = end;
        code_start = end;
    }
    push_code(&mut pieces, code_start, bytes.len());
    pieces
}

/// The number of `#` of a raw string (`r"…"`, `r#"…"#`) starting at `at`,
/// if one does (and `r` is not the end of a name, as in `for"`).
fn raw_string_at(bytes: &[u8], at: usize) -> Option<usize> {
    if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
        return None;
    }
    let hashes = bytes[at + 1..].iter().take_while(|&&b| b == b'#').count();
    (bytes.get(at + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// Where a Rust char literal opening at `at` ends, or `None` for a lifetime.
fn char_literal_end(source: &str, at: usize) -> Option<usize> {
    let rest = source.get(at + 1..)?;
    let mut chars = rest.char_indices();
    let (_, first) = chars.next()?;
    if first == '\\' {
        return rest.find('\'').filter(|&n| n > 1).map(|n| at + 1 + n + 1);
    }
    let (after, next) = chars.next()?;
    (next == '\'').then_some(at + 1 + after + 1)
}

/// The index of the quote closing a literal whose body starts at `from`.
fn closing_quote(bytes: &[u8], from: usize, quote: u8) -> usize {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisor_s_kinds_come_from_its_type_and_every_one_has_a_sample() {
        let kinds: BTreeSet<&str> = supervisor_kinds().iter().copied().collect();
        assert!(kinds.contains("ready") && kinds.contains("rollout_finished"));
        // Every variant has a sample, so every event's fields are known;
        // a new variant fails here until `samples` lists it.
        let sampled: BTreeSet<String> = samples().iter().map(tag).collect();
        let kinds: BTreeSet<String> = kinds.into_iter().map(str::to_owned).collect();
        assert_eq!(sampled, kinds);
        assert_eq!(supervisor_kinds().len(), samples().len());
    }

    #[test]
    fn supervisor_fields_come_from_serialising_the_samples() {
        let exit = &supervisor_fields()["exit"];
        assert_eq!(
            exit,
            &[
                "code",
                "event",
                "exited_after_disconnect",
                "id",
                "pid",
                "reason",
                "signal"
            ]
        );
        let vocabulary = Vocabulary::supervisor_only();
        assert_eq!(vocabulary.field("exit", &["code".into()]), Ok(()));
        assert_eq!(
            vocabulary.field("exit", &["cdoe".into()]),
            Err("unknown field \"cdoe\" of the supervisor's \"exit\" event (its fields: code, event, exited_after_disconnect, id, pid, reason, signal)".into())
        );
        // Below the first field is free JSON.
        assert_eq!(
            vocabulary.field("message", &["body".into(), "anything".into()]),
            Ok(())
        );
    }

    #[test]
    fn report_custom_and_emit_name_kinds() {
        let rust = r##"
            // cluster.report("in_a_comment", …) — and an apostrophe: don't
            cluster.report("broadcast", &fields, &says);
            reporter.custom(
                "no_drain",
                &json!({ "dropped": 1 }),
            );
            let c = '"'; let s: &'static str = r#"report("raw")"#;
            pub fn report(&self, kind: &str) {}
        "##;
        let found = scan(rust, true);
        assert_eq!(
            found.kinds,
            BTreeSet::from(["broadcast".to_owned(), "no_drain".to_owned()])
        );

        let js = "twin.emit('role', whoami()); // it's\n\
                  twin.emit(\"cpus\", {});\n\
                  twin.emit(`${name}_client_closed`, { how });\n\
                  function emit(kind, fields = {}) {}\n";
        let found = scan(js, false);
        assert_eq!(
            found.kinds,
            BTreeSet::from(["cpus".to_owned(), "role".to_owned()])
        );
        assert_eq!(
            found.patterns,
            [vec![String::new(), "_client_closed".into()]]
        );
        assert!(fits(&found.patterns[0], "idle_client_closed"));
        assert!(!fits(&found.patterns[0], "_client_closed"));
        assert!(!fits(&found.patterns[0], "idle_client_closd"));
    }

    #[test]
    fn a_file_that_forwards_kinds_names_them_all() {
        let js = "if (['copied', 'flood_received'].includes(msg.type)) {\n\
                  const { type, ...fields } = msg;\n  twin.emit(type, fields);\n}\n";
        let found = scan(js, false);
        assert_eq!(
            found.kinds,
            BTreeSet::from(["copied".to_owned(), "flood_received".to_owned()])
        );
    }

    #[test]
    fn a_lesson_s_records_are_found_in_its_sources() {
        let root = crate::workspace_root();
        let script = root.join("scenarios/05-ipc.toml");
        let rust = Vocabulary::for_script(&script, None, &Program::Lesson, false);
        assert_eq!(rust.kind("gathered"), Ok(()));
        assert_eq!(rust.kind("ready"), Ok(()));
        assert!(rust.kind("gatherd").is_err());
        // The twin's own kinds are the twin's scripts' only.
        let node = Vocabulary::for_script(&script, None, &Program::Node("usual.js".into()), false);
        assert_eq!(node.kind("delivered"), Ok(()));
        assert!(rust.kind("delivered").is_err());
    }
}
