//! The checks a script makes: `expect = "load.main.failed == 0"`.
//!
//! A check is one comparison, written the way a reader would say it, so the
//! transcript can print it verbatim as a verdict: `✓ load.main.failed == 0`.
//! A tiny fixed grammar beats a general expression language here: every
//! check in every script reads the same way, and a typo is caught when the
//! script is read, not when the step runs.
//!
//! ```text
//! check    := operand op operand
//! op       := == | != | <= | >= | < | > | contains
//! operand  := JSON literal (3, "text", true, [1, 3]) | fact
//! fact     := load.NAME.FIELD        ok failed sent distinct_workers
//!                                    spread_pct p50_ms p99_ms status.CODE
//!                                    refused reset closed timeout error
//!                                    (requests with no response, by how)
//!           | request.NAME.FIELD     status worker error body json.PATH
//!           | exit.FIELD             code signal stderr
//!           | workers.alive          forked worker processes still running
//!           | rollout.min_ready      the fewest ready workers at any moment
//!                                    between rollout_started and
//!                                    rollout_finished, replayed from events
//!           | FN(KIND[.PATH])        over the primary's events of one kind:
//!                                    count distinct all sorted first last
//! ```

use std::fmt;

use serde_json::Value;

/// A fact a check can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Load {
        name: String,
        field: String,
    },
    Request {
        name: String,
        field: String,
    },
    Exit(String),
    WorkersAlive,
    /// The fewest workers ready (said `ready`, not yet told to leave or
    /// gone) at any moment of a rollout.
    RolloutMinReady,
    Events {
        func: EventFn,
        kind: String,
        /// Dotted path into each event, e.g. `body.pid`; empty for the whole event.
        path: Vec<String>,
    },
}

/// What to make of all the events of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFn {
    /// How many there were.
    Count,
    /// How many different values the path took.
    Distinct,
    /// The values in arrival order.
    All,
    /// The values sorted: for ids whose arrival order is not guaranteed.
    Sorted,
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Fact(Fact),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Le,
    Ge,
    Lt,
    Gt,
    Contains,
}

const OPS: &[(&str, Op)] = &[
    ("==", Op::Eq),
    ("!=", Op::Ne),
    ("<=", Op::Le),
    (">=", Op::Ge),
    ("<", Op::Lt),
    (">", Op::Gt),
    ("contains", Op::Contains),
];

const LOAD_FIELDS: &[&str] = &[
    "ok",
    "failed",
    "sent",
    "refused",
    "reset",
    "closed",
    "timeout",
    "error",
    "distinct_workers",
    "spread_pct",
    "p50_ms",
    "p99_ms",
];
const REQUEST_FIELDS: &[&str] = &["status", "worker", "error", "body"];
const EXIT_FIELDS: &[&str] = &["code", "signal", "stderr"];

/// One parsed `expect`.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    text: String,
    lhs: Operand,
    op: Op,
    rhs: Operand,
}

/// How a check came out.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Holds,
    /// It does not hold; the values seen, for the failure message.
    Fails {
        lhs: Value,
        rhs: Value,
    },
    /// A fact could not be found (a load that never ran, no such event).
    Unknown(String),
}

impl Check {
    pub fn parse(text: &str) -> Result<Check, String> {
        let text = text.trim();
        let words: Vec<&str> = text.split_whitespace().collect();
        let found: Vec<(usize, Op)> = words
            .iter()
            .enumerate()
            .filter_map(|(at, word)| {
                OPS.iter()
                    .find(|(op, _)| op == word)
                    .map(|(_, op)| (at, *op))
            })
            .collect();
        let [(at, op)] = found.as_slice() else {
            return Err(format!(
                "`{text}` is not a check: write `fact op value` with one of == != <= >= < > contains, separated by spaces"
            ));
        };
        let lhs = words[..*at].join(" ");
        let rhs = words[at + 1..].join(" ");
        if lhs.is_empty() || rhs.is_empty() {
            return Err(format!(
                "`{text}` needs something on both sides of the operator"
            ));
        }
        Ok(Check {
            text: text.to_owned(),
            lhs: operand(&lhs)?,
            op: *op,
            rhs: operand(&rhs)?,
        })
    }

    /// The events the check reads, each with the dotted path into it
    /// (`last(exit.code)`: `exit` and `["code"]`), for the script reader
    /// to check the names against the events there are.
    pub fn events(&self) -> Vec<(&str, &[String])> {
        [&self.lhs, &self.rhs]
            .into_iter()
            .filter_map(|operand| match operand {
                Operand::Fact(Fact::Events { kind, path, .. }) => {
                    Some((kind.as_str(), path.as_slice()))
                }
                _ => None,
            })
            .collect()
    }

    /// Evaluates the check, looking facts up with `lookup`.
    pub fn evaluate(&self, lookup: impl Fn(&Fact) -> Result<Value, String>) -> Verdict {
        let value = |operand: &Operand| match operand {
            Operand::Literal(value) => Ok(value.clone()),
            Operand::Fact(fact) => lookup(fact),
        };
        let (lhs, rhs) = match (value(&self.lhs), value(&self.rhs)) {
            (Ok(lhs), Ok(rhs)) => (lhs, rhs),
            (Err(why), _) | (_, Err(why)) => return Verdict::Unknown(why),
        };
        if compare(&lhs, self.op, &rhs) {
            Verdict::Holds
        } else {
            Verdict::Fails { lhs, rhs }
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn operand(text: &str) -> Result<Operand, String> {
    let literal = text.starts_with(|c: char| c.is_ascii_digit() || "-\"[".contains(c))
        || ["true", "false", "null"].contains(&text);
    if literal {
        return serde_json::from_str(text)
            .map(Operand::Literal)
            .map_err(|error| format!("`{text}` is not a valid value: {error}"));
    }
    fact(text).map(Operand::Fact)
}

fn fact(text: &str) -> Result<Fact, String> {
    if let Some((func, rest)) = text.split_once('(') {
        let func = match func {
            "count" => EventFn::Count,
            "distinct" => EventFn::Distinct,
            "all" => EventFn::All,
            "sorted" => EventFn::Sorted,
            "first" => EventFn::First,
            "last" => EventFn::Last,
            other => {
                return Err(format!(
                    "unknown function `{other}`: use count, distinct, all, sorted, first or last"
                ));
            }
        };
        let inner = rest
            .strip_suffix(')')
            .ok_or_else(|| format!("`{text}`: write FN(kind.path) with nothing after the `)`"))?;
        let mut parts = inner.split('.').map(str::to_owned);
        let kind = parts.next().unwrap_or_default();
        if kind.is_empty() || kind.contains(char::is_whitespace) {
            return Err(format!("`{text}`: name an event kind, like count(fork)"));
        }
        return Ok(Fact::Events {
            func,
            kind,
            path: parts.collect(),
        });
    }

    let parts: Vec<&str> = text.split('.').collect();
    let known = |field: &str, fields: &[&str]| {
        fields.contains(&field) || (fields == LOAD_FIELDS && field.starts_with("status."))
    };
    match parts.as_slice() {
        ["load", name, field @ ..] if known(&field.join("."), LOAD_FIELDS) => Ok(Fact::Load {
            name: (*name).to_owned(),
            field: field.join("."),
        }),
        ["load", ..] => Err(format!(
            "`{text}`: write load.NAME.FIELD with FIELD one of {} or status.CODE",
            LOAD_FIELDS.join(", ")
        )),
        ["request", name, field] if REQUEST_FIELDS.contains(field) => Ok(Fact::Request {
            name: (*name).to_owned(),
            field: (*field).to_owned(),
        }),
        // The body parsed as JSON, then a dotted path into it.
        ["request", name, "json", path @ ..] if !path.is_empty() => Ok(Fact::Request {
            name: (*name).to_owned(),
            field: format!("json.{}", path.join(".")),
        }),
        ["request", ..] => Err(format!(
            "`{text}`: write request.NAME.FIELD with FIELD one of {} or json.PATH",
            REQUEST_FIELDS.join(", ")
        )),
        ["exit", field] if EXIT_FIELDS.contains(field) => Ok(Fact::Exit((*field).to_owned())),
        ["exit", ..] => Err(format!(
            "`{text}`: write exit.code, exit.signal or exit.stderr"
        )),
        ["workers", "alive"] => Ok(Fact::WorkersAlive),
        ["rollout", "min_ready"] => Ok(Fact::RolloutMinReady),
        _ => Err(format!(
            "`{text}` is not a fact: use load.…, request.…, exit.…, workers.alive, rollout.min_ready or FN(event)"
        )),
    }
}

fn compare(lhs: &Value, op: Op, rhs: &Value) -> bool {
    let numbers = lhs.as_f64().zip(rhs.as_f64());
    match op {
        Op::Eq => equal(lhs, rhs),
        Op::Ne => !equal(lhs, rhs),
        Op::Contains => match (lhs, rhs) {
            (Value::String(hay), Value::String(needle)) => hay.contains(needle.as_str()),
            (Value::Array(items), needle) => items.iter().any(|item| equal(item, needle)),
            _ => false,
        },
        Op::Le => numbers.is_some_and(|(a, b)| a <= b),
        Op::Ge => numbers.is_some_and(|(a, b)| a >= b),
        Op::Lt => numbers.is_some_and(|(a, b)| a < b),
        Op::Gt => numbers.is_some_and(|(a, b)| a > b),
    }
}

/// True if every `path = value` in `matching` holds for `event`; a path
/// is dotted (`body.role`).
pub fn matches(event: &Value, matching: &[(String, Value)]) -> bool {
    matching.iter().all(|(path, want)| {
        path.split('.')
            .try_fold(event, field)
            .is_some_and(|got| equal(got, want))
    })
}

/// One step of a dotted path: a key of an object, or an index (`0`, `1` …)
/// into an array.
pub fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match (value, key.parse::<usize>()) {
        (Value::Array(items), Ok(index)) => items.get(index),
        _ => value.get(key),
    }
}

/// JSON equality where `3` and `3.0` are the same number.
fn equal(lhs: &Value, rhs: &Value) -> bool {
    match (lhs, rhs) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equal(x, y))
        }
        _ => lhs == rhs,
    }
}

/// Replays `events` and returns the fewest ready workers at any moment
/// from a `rollout_started` to its `rollout_finished`: a worker counts from
/// its `ready` until it is told to leave (`draining`), disconnects or exits.
/// `None` if no rollout started.
pub fn min_ready_during_rollout(events: &[Value]) -> Option<usize> {
    let mut ready = std::collections::BTreeSet::new();
    let mut rolling = false;
    let mut fewest: Option<usize> = None;
    for event in events {
        let id = event["id"].as_u64();
        match (event["event"].as_str().unwrap_or_default(), id) {
            ("ready", Some(id)) => {
                ready.insert(id);
            }
            ("draining" | "disconnect" | "exit", Some(id)) => {
                ready.remove(&id);
            }
            ("rollout_started", _) => rolling = true,
            ("rollout_finished", _) => rolling = false,
            _ => {}
        }
        if rolling || event["event"] == "rollout_started" {
            fewest = Some(fewest.map_or(ready.len(), |f| f.min(ready.len())));
        }
    }
    fewest
}

/// Applies `func` to the `path` of each event in `events`.
pub fn over_events(func: EventFn, path: &[String], events: &[&Value]) -> Result<Value, String> {
    if func == EventFn::Count {
        return Ok(Value::from(events.len()));
    }
    let mut values = Vec::with_capacity(events.len());
    for event in events {
        let value = path
            .iter()
            .try_fold(*event, |value, key| field(value, key))
            .ok_or_else(|| format!("an event has no field `{}`: {event}", path.join(".")))?;
        values.push(value.clone());
    }
    Ok(match func {
        EventFn::Count => Value::from(values.len()),
        EventFn::Distinct => {
            let mut seen: Vec<String> = values.iter().map(Value::to_string).collect();
            seen.sort();
            seen.dedup();
            Value::from(seen.len())
        }
        EventFn::All => Value::Array(values),
        EventFn::Sorted => {
            values.sort_by(|a, b| match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => a.to_string().cmp(&b.to_string()),
            });
            Value::Array(values)
        }
        EventFn::First => values
            .into_iter()
            .next()
            .ok_or_else(|| "there were no such events".to_owned())?,
        EventFn::Last => values
            .pop()
            .ok_or_else(|| "there were no such events".to_owned())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holds(text: &str, facts: &[(Fact, Value)]) -> Verdict {
        let check = Check::parse(text).expect("the check parses");
        check.evaluate(|fact| {
            facts
                .iter()
                .find(|(known, _)| known == fact)
                .map(|(_, value)| value.clone())
                .ok_or_else(|| format!("no fact {fact:?}"))
        })
    }

    fn load(field: &str) -> Fact {
        Fact::Load {
            name: "main".into(),
            field: field.into(),
        }
    }

    #[test]
    fn min_ready_replays_a_rollout() {
        let event = |text: &str| serde_json::from_str::<Value>(text).expect("test JSON");
        let story = [
            r#"{"event":"ready","id":1}"#,
            r#"{"event":"ready","id":2}"#,
            r#"{"event":"rollout_started","generation":2,"workers":2}"#,
            r#"{"event":"ready","id":3}"#,
            r#"{"event":"draining","id":1,"reason":"replaced"}"#,
            r#"{"event":"exit","id":1}"#,
            // A replacement that is ready only after its predecessor left:
            // for a moment a single worker serves.
            r#"{"event":"draining","id":2,"reason":"replaced"}"#,
            r#"{"event":"ready","id":4}"#,
            r#"{"event":"rollout_finished","generation":2}"#,
            r#"{"event":"exit","id":3}"#,
        ]
        .map(event);
        assert_eq!(min_ready_during_rollout(&story), Some(1));
        assert_eq!(min_ready_during_rollout(&story[..2]), None);
    }

    #[test]
    fn comparisons() {
        assert_eq!(
            holds("load.main.failed == 0", &[(load("failed"), json!(0))]),
            Verdict::Holds
        );
        assert_eq!(
            holds("load.main.failed == 0", &[(load("failed"), json!(2))]),
            Verdict::Fails {
                lhs: json!(2),
                rhs: json!(0)
            }
        );
        assert_eq!(
            holds(
                "load.main.spread_pct <= 5",
                &[(load("spread_pct"), json!(4.5))]
            ),
            Verdict::Holds
        );
        assert_eq!(
            holds(
                "exit.stderr contains \"gave up\"",
                &[(Fact::Exit("stderr".into()), json!("x gave up y"))]
            ),
            Verdict::Holds
        );
        assert_eq!(
            holds("exit.code != 0", &[(Fact::Exit("code".into()), json!(1))]),
            Verdict::Holds
        );
        assert_eq!(
            holds(
                "exit.code != 0",
                &[(Fact::Exit("code".into()), json!(null))]
            ),
            Verdict::Holds
        );
        assert_eq!(
            holds("load.main.ok > 3", &[(load("ok"), json!("many"))]),
            Verdict::Fails {
                lhs: json!("many"),
                rhs: json!(3)
            }
        );
    }

    #[test]
    fn facts_on_both_sides_and_unknown_facts() {
        let facts = [(load("ok"), json!(200)), (load("sent"), json!(200))];
        assert_eq!(
            holds("load.main.ok == load.main.sent", &facts),
            Verdict::Holds
        );
        assert!(matches!(
            holds("load.other.ok == 1", &facts),
            Verdict::Unknown(_)
        ));
    }

    #[test]
    fn event_functions() {
        let events = [
            json!({"event":"message","body":{"id":2}}),
            json!({"event":"message","body":{"id":1}}),
            json!({"event":"message","body":{"id":2}}),
        ];
        let refs: Vec<&Value> = events.iter().collect();
        let path = vec!["body".to_owned(), "id".to_owned()];
        assert_eq!(over_events(EventFn::Count, &[], &refs), Ok(json!(3)));
        assert_eq!(over_events(EventFn::Distinct, &path, &refs), Ok(json!(2)));
        assert_eq!(
            over_events(EventFn::All, &path, &refs),
            Ok(json!([2, 1, 2]))
        );
        assert_eq!(
            over_events(EventFn::Sorted, &path, &refs),
            Ok(json!([1, 2, 2]))
        );
        assert_eq!(over_events(EventFn::Last, &path, &refs), Ok(json!(2)));
        let nested = [json!({"event":"gathered","missing":[{"id":2}]})];
        let index = ["missing".to_owned(), "0".to_owned(), "id".to_owned()];
        assert_eq!(
            over_events(EventFn::Last, &index, &[&nested[0]]),
            Ok(json!(2))
        );
        assert!(over_events(EventFn::Last, &path, &[]).is_err());
        assert!(over_events(EventFn::All, &["nope".to_owned()], &refs).is_err());
        assert_eq!(
            fact("sorted(message.body.id)"),
            Ok(Fact::Events {
                func: EventFn::Sorted,
                kind: "message".into(),
                path: path.clone()
            })
        );
    }

    #[test]
    fn mistakes_are_caught_when_the_script_is_read() {
        for bad in [
            "load.main.okay == 1",
            "load.main.ok = 1",
            "loads.main.ok == 1",
            "counts(fork) == 1",
            "count(fork) == [1",
            "== 1",
            "exit.code",
        ] {
            assert!(Check::parse(bad).is_err(), "{bad} should not parse");
        }
        assert!(Check::parse("load.main.status.200 == 10").is_ok());
        assert!(Check::parse("request.me.json.role == \"worker\"").is_ok());
        assert!(Check::parse("request.me.json == 1").is_err());
    }
}
