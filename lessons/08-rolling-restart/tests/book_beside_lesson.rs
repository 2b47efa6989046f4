//! The way the workbook is meant to be used: the book open in one terminal
//! (`mdbook serve book`) and a lesson running in another (`just lesson 08`),
//! both with no flag. They must not want the same port.
//!
//! This is the one test that binds fixed ports, because the defaults are
//! what it checks: mdBook's 3000 (its live-reload socket is on the same
//! port) and the lessons' 8000. Both lie below the ephemeral range the
//! other tests' port-0 sockets come from (32768–60999 here).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long each server may take to come up on a slow CI machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and waits until one of its output lines (on `stdout`
/// or stderr, whichever the program uses) contains `marker`.
fn start_and_wait(
    mut command: Command,
    marker: &'static str,
) -> Result<Running, Box<dyn std::error::Error>> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Running(command.spawn()?);
    let (seen, saw) = mpsc::channel();
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.0.stdout.take().ok_or("no stdout")?),
        Box::new(child.0.stderr.take().ok_or("no stderr")?),
    ];
    for pipe in pipes {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut said = Vec::new();
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains(marker) {
                    let _ = seen.send(Ok(()));
                }
                said.push(line);
            }
            let _ = seen.send(Err(said.join("\n")));
        });
    }
    for _ in 0..2 {
        match saw.recv_timeout(PATIENCE) {
            Ok(Ok(())) => return Ok(child),
            Ok(Err(_)) => continue,
            Err(_) => break,
        }
    }
    let status = child.0.try_wait()?;
    Err(format!("never printed {marker:?} (status: {status:?})").into())
}

/// One GET on a new connection; the status line and the body.
fn get(host: &str, port: u16) -> Result<(String, String), Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

#[test]
fn the_book_and_a_lesson_run_side_by_side_on_their_default_ports()
-> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if Command::new("mdbook").arg("--version").output().is_err() {
        // CI installs mdbook (.ci/run); on a machine without it there is no
        // book server to clash with.
        assert!(
            std::env::var_os("CI").is_none(),
            "mdbook is not installed: `cargo install --locked mdbook`"
        );
        println!("skipped: mdbook is not installed (`cargo install --locked mdbook`)");
        return Ok(());
    }
    let built = tempfile::tempdir()?;

    // As a reader types them: no port, no flag that changes one.
    let mut book = Command::new("mdbook");
    book.arg("serve")
        .arg(root.join("book"))
        .arg("--dest-dir")
        .arg(built.path());
    let _book = start_and_wait(book, "Serving on")?;

    let mut lesson = Command::new(env!("CARGO_BIN_EXE_lesson-08"));
    lesson.args(["--serve", "--events", "json"]);
    let _lesson = start_and_wait(lesson, "serving on http://")?;

    let (status, body) = get("localhost", 3000)?;
    assert!(status.contains(" 200 "), "the book answered {status}");
    assert!(body.contains("<html"), "the book's page: {body:.200}");

    let (status, body) = get("127.0.0.1", 8000)?;
    assert!(status.contains(" 200 "), "the lesson answered {status}");
    assert!(
        body.contains("hello from worker"),
        "the lesson said {body:?}"
    );
    Ok(())
}
