//! Ctrl-C while the first workers warm up: the primary stops at once and
//! says why, instead of waiting out the whole ready timeout (10 s) and then
//! blaming the workers for not being ready.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

#[test]
fn a_stop_during_start_up_ends_the_wait_for_ready_at_once() -> Result<(), Box<dyn std::error::Error>>
{
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
        // Far longer than the test waits: the workers are warming up when
        // the signal comes. The ready timeout stays at its 10 s default.
        .args(["--warmup", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = primary.stdout.take().ok_or("no stdout")?;
    let mut stderr = primary.stderr.take().ok_or("no stderr")?;
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut listening = 0;
    for line in lines.by_ref() {
        let event: Value = serde_json::from_str(&line?)?;
        if event["event"] == "listening" {
            listening += 1;
            if listening == 2 {
                break;
            }
        }
    }
    let status = Command::new("kill")
        .arg("-INT")
        .arg(primary.id().to_string())
        .status()?;
    assert!(status.success());

    // The primary's stdout closes when it exits (its workers hold no copy).
    let (closed, gone) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in lines {}
        let _ = closed.send(());
    });
    let exited_soon = gone.recv_timeout(Duration::from_secs(5)).is_ok();
    if !exited_soon {
        let _ = primary.kill();
    }
    let _ = primary.wait();
    let stderr = said.join().map_err(|_| "the stderr reader panicked")?;
    assert!(
        exited_soon,
        "still waiting 5 s after Ctrl-C during start-up: {stderr}"
    );
    assert!(
        stderr.contains("the cluster began to stop first"),
        "{stderr}"
    );
    assert!(!stderr.contains("not within"), "{stderr}");
    Ok(())
}
