//! The per-worker distribution table: who got how many connections and
//! requests, each one's share, and how uneven it is.
//!
//! The spread is `(max - min) / mean` of requests per worker: 0 % is perfectly
//! even; 100 % means the busiest worker did a whole average worker's work more
//! than the idlest. It is computed from what the workers *counted*, not from
//! what a client believes it sent, so the table also shows whether every
//! request sent was served.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use supervisor::WorkerId;

/// What one worker counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub connections: u64,
    pub requests: u64,
}

/// The table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Distribution {
    pub workers: BTreeMap<WorkerId, Counts>,
}

impl Distribution {
    pub fn total(&self) -> Counts {
        self.workers
            .values()
            .fold(Counts::default(), |sum, c| Counts {
                connections: sum.connections + c.connections,
                requests: sum.requests + c.requests,
            })
    }

    /// A worker's share of all requests, in percent.
    pub fn share(&self, id: WorkerId) -> f64 {
        let total = self.total().requests;
        match (self.workers.get(&id), total) {
            (Some(counts), total) if total > 0 => 100.0 * counts.requests as f64 / total as f64,
            _ => 0.0,
        }
    }

    /// `(max - min) / mean` of requests per worker, in percent.
    pub fn spread(&self) -> f64 {
        supervisor::spread::spread_pct(self.workers.values().map(|c| c.requests))
    }

    /// The table as JSON, for `--events json`.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<_> = self
            .workers
            .iter()
            .map(|(id, c)| {
                serde_json::json!({
                    "id": id, "connections": c.connections, "requests": c.requests,
                    "share_pct": round1(self.share(*id)),
                })
            })
            .collect();
        let total = self.total();
        serde_json::json!({
            "workers": rows,
            "total_connections": total.connections,
            "total_requests": total.requests,
            "spread_pct": round1(self.spread()),
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "worker  connections  requests   share")?;
        for (id, counts) in &self.workers {
            writeln!(
                f,
                "{:>6}  {:>11}  {:>8}  {:>5.1}%",
                id.0,
                counts.connections,
                counts.requests,
                self.share(*id)
            )?;
        }
        let total = self.total();
        writeln!(
            f,
            " total  {:>11}  {:>8}",
            total.connections, total.requests
        )?;
        write!(
            f,
            "spread (max - min) / mean of requests: {:.1}%",
            self.spread()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(requests: &[u64]) -> Distribution {
        Distribution {
            workers: requests
                .iter()
                .enumerate()
                .map(|(i, &r)| {
                    (
                        WorkerId(i as u32 + 1),
                        Counts {
                            connections: r,
                            requests: r,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn an_even_table_has_no_spread() {
        let even = table(&[25, 25, 25, 25]);
        assert_eq!(even.spread(), 0.0);
        assert_eq!(even.share(WorkerId(1)), 25.0);
        assert_eq!(even.total().requests, 100);
    }

    #[test]
    fn spread_is_max_minus_min_over_mean() {
        // mean 20, max 56, min 2: (56 - 2) / 20 = 270 %
        assert_eq!(table(&[56, 2, 2]).spread(), 270.0);
    }

    #[test]
    fn an_empty_table_is_not_a_division_by_zero() {
        assert_eq!(table(&[]).spread(), 0.0);
        assert_eq!(table(&[0, 0]).spread(), 0.0);
        assert_eq!(table(&[0, 0]).share(WorkerId(1)), 0.0);
    }
}
