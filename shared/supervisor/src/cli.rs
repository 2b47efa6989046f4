//! The flags every lesson shares, so that `--workers 4 --port 0 --sched rr
//! --events json` means the same thing in every lesson and the scenario
//! runner can start any of them the same way. A lesson flattens
//! [`ClusterArgs`] into its own clap parser and adds its own flags.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::cluster::ClusterOptions;
use crate::listen::Sched;
use crate::report::EventsFormat;

/// Cluster flags common to all lessons.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Number of workers [default: one per CPU this process may use]
    #[arg(long, short = 'w', value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,

    /// Address to listen on (the load generators only target 127.0.0.1)
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,

    /// Port to listen on; 0 picks any free port
    #[arg(long, short = 'p', default_value_t = 8000)]
    pub port: u16,

    /// Who accepts connections: rr (the primary, round-robin), shared (the workers,
    /// one inherited socket) or reuseport (the workers, one socket each, kernel hashing)
    #[arg(long, default_value_t = Sched::RoundRobin)]
    pub sched: Sched,

    /// How the primary prints events: human (log lines), json (one object per line)
    /// or quiet (none)
    #[arg(long, default_value_t = EventsFormat::Human, env = "CLUSTER_EVENTS")]
    pub events: EventsFormat,

    /// Seconds a stopping worker may take before it is killed
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    pub grace: Duration,

    /// Seconds a new worker may take to say it is ready before it is killed
    #[arg(long, default_value = "10", value_parser = parse_ready_timeout)]
    pub ready_timeout: Duration,

    /// Threads in each worker's async runtime; 1 runs one event loop per worker,
    /// as Node does [default: the usable cores ÷ workers, at least 1]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: Option<u16>,
}

impl ClusterArgs {
    /// The options these flags describe; restart policy and the rest are
    /// the lesson's to set.
    pub fn options(&self) -> ClusterOptions {
        ClusterOptions {
            workers: self
                .workers
                .map_or_else(crate::default_workers, usize::from),
            addr: SocketAddr::new(self.host, self.port),
            sched: self.sched,
            events: self.events,
            grace: self.grace,
            ready_timeout: self.ready_timeout,
            worker_threads: self.worker_threads.map(usize::from),
            ..ClusterOptions::default()
        }
    }
}

/// The longest duration a flag takes: a day. Longer is a typo, and a
/// deadline that far out would overflow the clock it is added to.
pub const MAX_SECONDS: f64 = 86_400.0;

/// Parses seconds as a number (`10`, `0.5`) or with a unit (`10s`, `500ms`),
/// from 0 to a day.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    duration_from(text, Duration::from_secs_f64(MAX_SECONDS), true).ok_or_else(|| {
        format!(
            "{text:?} is not a duration from 0 to a day: write seconds (10, 0.5) or use a unit (10s, 500ms)"
        )
    })
}

/// The one reading of a duration in the workbook, for flags and scripts
/// alike: a number with `ms` or `s` (or, if `bare_seconds`, a plain number
/// of seconds), from 0 to `max`. `None` for anything else: each caller
/// says what it expected in its own words.
pub fn duration_from(text: &str, max: Duration, bare_seconds: bool) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else if bare_seconds {
        (text, 1.0)
    } else {
        return None;
    };
    let seconds = number.trim().parse::<f64>().ok()? * scale;
    if !seconds.is_finite() || seconds < 0.0 || seconds > max.as_secs_f64() {
        return None;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

/// A ready timeout: [`parse_seconds`], but never 0, which would kill
/// every worker before it could say it is ready and leave none serving.
pub fn parse_ready_timeout(text: &str) -> Result<Duration, String> {
    match parse_seconds(text)? {
        Duration::ZERO => Err(format!(
            "{text:?} would kill every worker before it could be ready: give it time, like 10 or 500ms"
        )),
        timeout => Ok(timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_seconds("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("1e19").is_err());
    }

    #[test]
    fn a_unit_may_be_required_and_a_bound_is_kept() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            duration_from("1.5s", hour, false),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            duration_from(" 20ms ", hour, false),
            Some(Duration::from_millis(20))
        );
        assert_eq!(duration_from("5", hour, false), None);
        assert_eq!(duration_from("5", hour, true), Some(Duration::from_secs(5)));
        assert_eq!(duration_from("3601s", hour, false), None);
        assert_eq!(duration_from("NaNs", hour, false), None);
    }

    #[test]
    fn a_ready_timeout_of_zero_is_refused() {
        assert_eq!(parse_ready_timeout("250ms"), Ok(Duration::from_millis(250)));
        let refused = parse_ready_timeout("0").err().unwrap_or_default();
        assert!(refused.contains("would kill every worker"), "{refused}");
        assert!(parse_ready_timeout("0ms").is_err());
    }
}
