//! Five SIGHUPs during one rollout: one rollout, and one line that says a
//! rolling restart began. The four refused ones are `rollout_ignored`
//! events, not four more "SIGHUP: rolling restart" lines that would tell a
//! reader five rollouts ran.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use serde_json::Value;

/// `kill -SIGNAL pid`, with the shell's tool: this test needs nothing more.
fn signal(pid: u32, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pid} failed: {status}").into())
    }
}

#[test]
fn sighups_during_a_rollout_are_refused_and_said_once() -> Result<(), Box<dyn std::error::Error>> {
    let mut primary = Command::new(env!("CARGO_BIN_EXE_lesson-08"))
        .args([
            "--serve",
            "--workers",
            "2",
            "--port",
            "0",
            "--events",
            "json",
        ])
        // Long enough that the four later signals all land during the rollout.
        .args(["--warmup", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = primary.id();
    let stdout = primary.stdout.take().ok_or("no stdout")?;
    let mut stderr = primary.stderr.take().ok_or("no stderr")?;
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let (mut ready, mut started, mut ignored, mut finished) = (0, 0, 0, 0);
    for line in BufReader::new(stdout).lines() {
        let event: Value = serde_json::from_str(&line?)?;
        match event["event"].as_str() {
            Some("ready") if started == 0 => {
                ready += 1;
                if ready == 2 {
                    signal(pid, "HUP")?;
                }
            }
            Some("rollout_started") => {
                started += 1;
                signal(pid, "HUP")?;
            }
            // Each refusal is awaited before the next signal, so signals
            // cannot merge into one pending SIGHUP.
            Some("rollout_ignored") => {
                ignored += 1;
                if ignored < 4 {
                    signal(pid, "HUP")?;
                }
            }
            Some("rollout_finished") => {
                finished += 1;
                signal(pid, "TERM")?;
            }
            _ => {}
        }
    }
    primary.wait()?;
    let stderr = said.join().map_err(|_| "the stderr reader panicked")?;
    assert_eq!((started, ignored, finished), (1, 4, 1), "{stderr}");
    assert_eq!(
        stderr.matches("SIGHUP: rolling restart").count(),
        1,
        "{stderr}"
    );
    Ok(())
}
