//! `hosts` starts a redis-server, two host clusters and an nginx (master,
//! workers, and the guardian that kills the workers when their owner is
//! gone). `kill -9` of the lesson's primary runs none of its code: every
//! one of those processes must go all the same. A scenario cannot show
//! this (it ends with the primary's own exit), so this test does: it
//! waits for the `hosts_up` event, notes the primary's whole process
//! tree, kills the primary with SIGKILL and waits for every process of
//! the tree to end.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use scenarios::gone;

/// `(pid, parent, name)` of every process now.
fn processes() -> Vec<(i32, i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let parent = fields.next()?.parse().ok()?;
            (state != "Z").then_some((pid, parent, name))
        })
        .collect()
}

/// `root` and every process below it, with their names.
fn tree(root: i32) -> Vec<(i32, String)> {
    let all = processes();
    let mut found: BTreeSet<i32> = BTreeSet::from([root]);
    loop {
        let before = found.len();
        for (pid, parent, _) in &all {
            if found.contains(parent) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    all.into_iter()
        .filter(|(pid, _, _)| found.contains(pid) && *pid != root)
        .map(|(pid, _, name)| (pid, name))
        .collect()
}

#[test]
fn kill_9_of_the_primary_leaves_no_nginx_redis_or_host() {
    let mut primary = match Command::new(env!("CARGO_BIN_EXE_lesson-10"))
        .args(["hosts", "roll", "--events", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!("starting lesson-10: {error}"),
    };
    let Some(stdout) = primary.stdout.take() else {
        panic!("no stdout");
    };
    let up = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("\"hosts_up\""));
    assert!(up, "the primary ended without a hosts_up event");
    let Ok(pid) = i32::try_from(primary.id()) else {
        panic!("pid out of range");
    };
    let below = tree(pid);
    let watched: Vec<gone::Watched> = below
        .iter()
        .filter_map(|(pid, _)| gone::watch(*pid))
        .collect();
    let names: BTreeSet<&str> = below.iter().map(|(_, name)| name.as_str()).collect();
    for needed in ["nginx", "redis-server", "lesson-10", "sh"] {
        assert!(
            names.contains(needed),
            "no {needed} below the primary: {below:?}"
        );
    }
    // Both hosts' primaries and their two workers each; nginx's master and
    // its two workers.
    let count = |name: &str| below.iter().filter(|(_, n)| n == name).count();
    assert!(count("lesson-10") >= 6, "{below:?}");
    assert!(count("nginx") >= 3, "{below:?}");

    if let Err(error) = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    ) {
        panic!("kill -9 {pid}: {error}");
    }
    let _ = primary.wait();
    let left = gone::still_running_after(&watched, Duration::from_secs(10));
    let left: Vec<&(i32, String)> = below.iter().filter(|(pid, _)| left.contains(pid)).collect();
    assert!(left.is_empty(), "outlived kill -9 of the primary: {left:?}");
}
