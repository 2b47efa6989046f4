//! `--naive` imitates the usual rolling restart in Rust: the loop of the
//! Node twin `node/disconnect.js`, and an old worker that closes its
//! connections as Node 20's `server.close()` does (`src/node_close.rs`).
//! An imitation is only worth its measurements if clients see from it what
//! they see from Node, so this test runs both under the same loads and
//! fails if what the clients saw differs in kind: a rollout that goes on
//! while clients send against one that waits on them, requests failed
//! against none.
//!
//! Two loads, the two faces of the usual answer:
//!
//! - *chatty*: four keep-alive clients whose every request takes 200 ms
//!   (`--handler-ms 200`), so a connection is nearly always busy. Node
//!   keeps a busy connection open and serving: the loop waits on the first
//!   old worker for as long as its client sends. (A request fails only if
//!   the server closes just as a connection is between two requests — rare,
//!   and possible in Node as in the imitation.)
//! - *busy*: 64 keep-alive clients with instant answers. Their connections
//!   are idle at almost every instant, so `server.close()` closes them at
//!   once — under requests already on their way — and the loop goes on:
//!   done in seconds, some requests failed.
//!
//! Both loads also run clients that open a new connection per request.

use std::path::Path;
use std::time::Duration;

use scenarios::{Outcome, Script, Transcript};

/// How long the clients send; the rollout must finish before this, or it
/// is waiting on them. `--grace 60` keeps the supervisor's drain deadline
/// out of that window (the Node loop has none).
const SENDING: Duration = Duration::from_secs(8);

const STEPS: &str = r#"
[[step]]
wait = "listening"
count = 4

[[step]]
load = "keep_alive"
background = true
keep_alive = true
connections = KEEP_ALIVE
requests = 1000000
max_time = "8s"
until = "rollout_finished"

[[step]]
load = "new_connection"
background = true
connections = NEW_CONNECTION
requests = 1000000
max_time = "8s"
until = "rollout_finished"

# Let every keep-alive connection be answered once before the signal.
[[step]]
wait = "exit"
none = true
within = "1s"

[[step]]
signal = "SIGUSR2"

[[step]]
await = "keep_alive"

[[step]]
await = "new_connection"

[[step]]
wait = "rollout_finished"
within = "30s"

[[step]]
signal = "SIGTERM"

[[step]]
wait_exit = "30s"
"#;

/// What the clients saw of one rollout, in kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The rollout was not over while the clients sent: it waited on them.
    /// A request may fail on the way (a connection idle at the instant
    /// its server closed, in Node as in the imitation), but that is not
    /// what the clients see of it.
    Waits,
    /// Over while they sent, with requests failed: by keep-alive clients,
    /// by new-connection clients.
    Fails {
        keep_alive: bool,
        new_connection: bool,
    },
    /// Over while they sent, and nothing failed.
    Clean,
}

/// The counts behind a [`Seen`], for the failure message.
fn describe(outcome: &Outcome) -> String {
    let loads = &outcome.measured.loads;
    ["keep_alive", "new_connection"]
        .iter()
        .map(|name| match loads.get(*name) {
            Some(load) => format!(
                "{name}: {} ok, {} failed {:?} in {:.1} s",
                load.ok,
                load.failed,
                load.errors,
                load.elapsed.as_secs_f64()
            ),
            None => format!("{name}: no report"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn seen(outcome: &Outcome) -> Seen {
    let load = |name| {
        outcome
            .measured
            .loads
            .get(name)
            .unwrap_or_else(|| panic!("no {name} load in {}", outcome.transcript))
    };
    let (keep_alive, new_connection) = (load("keep_alive"), load("new_connection"));
    // The loads stop at `rollout_finished`, or at the end of SENDING.
    let finished_while_sending = keep_alive.elapsed + Duration::from_secs(1) < SENDING;
    match (keep_alive.failed > 0, new_connection.failed > 0) {
        _ if !finished_while_sending => Seen::Waits,
        (false, false) => Seen::Clean,
        (keep_alive, new_connection) => Seen::Fails {
            keep_alive,
            new_connection,
        },
    }
}

/// Runs the same steps against `--serve --naive` and `node/disconnect.js`.
fn both(name: &str, keep_alive: u32, new_connection: u32, handler_ms: u32) -> [(Seen, String); 2] {
    let steps = STEPS
        .replace("KEEP_ALIVE", &keep_alive.to_string())
        .replace("NEW_CONNECTION", &new_connection.to_string());
    let handler = format!(r#""--handler-ms", "{handler_ms}""#);
    let rust = format!(
        "title = \"{name}: --naive\"\nargs = [\"--serve\", \"--naive\", \"--workers\", \"4\", \"--grace\", \"60\", {handler}]\n{steps}"
    );
    let node = format!(
        "title = \"{name}: Node\"\nnode = \"disconnect.js\"\nargs = [\"--workers\", \"4\", {handler}]\n{steps}"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let bin = Path::new(env!("CARGO_BIN_EXE_lesson-08"));
    [rust, node].map(|source| {
        let path = Path::new(&format!("08-naive-like-node-{name}.toml")).to_owned();
        let script = Script::parse(&path, &source).unwrap_or_else(|error| panic!("{error}"));
        let outcome = runtime.block_on(scenarios::run(bin, &script, &mut Transcript::quiet()));
        assert!(
            outcome.passed(),
            "{}: {:?}\n{}\n{}",
            script.title,
            outcome.failures,
            outcome.transcript,
            outcome.stderr
        );
        (seen(&outcome), describe(&outcome))
    })
}

fn same_in_kind(name: &str, keep_alive: u32, new_connection: u32, handler_ms: u32) -> Seen {
    let [(rust, rust_counts), (node, node_counts)] =
        both(name, keep_alive, new_connection, handler_ms);
    assert_eq!(
        rust, node,
        "{name}: --naive and Node differ in kind\n  --naive: {rust:?}\n           {rust_counts}\n  Node:    {node:?}\n           {node_counts}"
    );
    println!("{name}: {rust:?}\n  --naive: {rust_counts}\n  Node:    {node_counts}");
    rust
}

/// One test, so that the two loads never run at once.
#[test]
fn naive_shows_clients_what_node_shows_them() {
    // What Node does under each load: 08-rolling-restart-node-disconnect-chatty
    // and 08-rolling-restart-node-disconnect.
    let chatty = same_in_kind("chatty", 4, 4, 200);
    assert_eq!(chatty, Seen::Waits, "chatty");
    let busy = same_in_kind("busy", 64, 8, 0);
    let fails_keep_alive = Seen::Fails {
        keep_alive: true,
        new_connection: false,
    };
    assert_eq!(busy, fails_keep_alive, "busy");
}
