//! What an accept loop does when `accept` fails.
//!
//! The usual failure is `EMFILE`: the process has no file descriptor left
//! for the new connection. Nothing announces when one frees up, so the loop
//! must wait and retry — briefly at first, longer while it keeps failing —
//! and the connection waits meanwhile in the kernel's accept queue, where
//! it is not lost. What must not happen is a log line per failure: a loop
//! that retries every few milliseconds would print hundreds a second. So the
//! first failure of a burst is reported with its cause, and the end of the
//! burst with how many there were and how long it lasted.
//!
//! A client that gave up before we accepted it (`ECONNABORTED`) is not a
//! burst: it costs one connection, and the next accept is retried at once.

use std::io;
use std::time::{Duration, Instant};

use crate::handles::LostConnection;

/// The first wait after a failed accept; it doubles while failures go on.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest wait between two attempts.
const LONGEST_PAUSE: Duration = Duration::from_millis(500);

/// Failed accepts in a row, for one accept loop.
#[derive(Debug, Default)]
pub struct AcceptFailures {
    burst: Option<Burst>,
}

#[derive(Debug)]
struct Burst {
    since: Instant,
    count: u64,
    pause: Duration,
    /// Connections lost during the burst (round-robin: handed to us when
    /// we had no descriptor for them), as opposed to left waiting.
    lost: u64,
}

/// What to do about one failed accept.
#[derive(Debug, PartialEq, Eq)]
pub struct Retry {
    /// A line to print: set for the first failure of a burst only.
    pub report: Option<String>,
    /// How long to wait before accepting again.
    pub after: Duration,
}

impl AcceptFailures {
    /// `accept` failed with `error`.
    pub fn failed(&mut self, error: &io::Error) -> Retry {
        let lost = u64::from(LostConnection::is(error));
        if error.kind() == io::ErrorKind::ConnectionAborted {
            return Retry {
                report: None,
                after: Duration::ZERO,
            };
        }
        match &mut self.burst {
            Some(burst) => {
                burst.count += 1;
                burst.lost += lost;
                burst.pause = (burst.pause * 2).min(LONGEST_PAUSE);
                Retry {
                    report: None,
                    after: burst.pause,
                }
            }
            None => {
                self.burst = Some(Burst {
                    since: Instant::now(),
                    count: 1,
                    pause: FIRST_PAUSE,
                    lost,
                });
                Retry {
                    report: Some(format!("accept failed: {error}{}", hint(error))),
                    after: FIRST_PAUSE,
                }
            }
        }
    }

    /// `accept` worked again: the line that closes the burst, if there was one.
    pub fn succeeded(&mut self) -> Option<String> {
        let burst = self.burst.take()?;
        let fate = match burst.lost {
            0 => "no connection was lost, they waited in the backlog".to_string(),
            1 => "1 connection handed to this worker was lost".to_string(),
            n => format!("{n} connections handed to this worker were lost"),
        };
        Some(format!(
            "accepting again after {} failed attempt{} over {} ms; {fate}",
            burst.count,
            if burst.count == 1 { "" } else { "s" },
            burst.since.elapsed().as_millis()
        ))
    }
}

fn hint(error: &io::Error) -> &'static str {
    if LostConnection::is(error) {
        return " (round-robin hands connections over as descriptors: keep the worker's connection limit below its file limit, as the default does)";
    }
    match error.raw_os_error() {
        Some(nix::libc::EMFILE) => {
            " (this process is out of file descriptors: new connections wait in the backlog until some close; `ulimit -n` raises the limit)"
        }
        Some(nix::libc::ENFILE) => {
            " (the whole system is out of file descriptors: new connections wait in the backlog)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_reported_once_and_backs_off() {
        let mut failures = AcceptFailures::default();
        let emfile = io::Error::from_raw_os_error(nix::libc::EMFILE);
        let first = failures.failed(&emfile);
        assert!(
            first
                .report
                .as_deref()
                .is_some_and(|line| line.contains("out of file descriptors")),
            "{first:?}"
        );
        let pauses: Vec<Duration> = (0..10)
            .map(|_| failures.failed(&emfile))
            .map(|r| {
                assert_eq!(r.report, None);
                r.after
            })
            .collect();
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(pauses.last(), Some(&LONGEST_PAUSE));
        let end = failures.succeeded().unwrap_or_default();
        assert!(end.contains("after 11 failed attempts"), "{end}");
        assert_eq!(failures.succeeded(), None);
    }

    #[test]
    fn an_aborted_client_is_not_a_burst() {
        let mut failures = AcceptFailures::default();
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(
            failures.failed(&aborted),
            Retry {
                report: None,
                after: Duration::ZERO
            }
        );
        assert_eq!(failures.succeeded(), None);
    }
}
