//! The live view: one row per worker, redrawn every second.
//!
//! For people it clears the terminal and draws a table; for machines
//! (`--events json`) it prints one `vitals` event per tick with the same
//! rows. The numbers come from the health monitor's samples
//! ([`supervisor::Cluster::vitals`]); CPU is a percentage of one core over
//! the last interval — not the cumulative CPU seconds some samples print
//! under a "%" sign — and memory is RSS, what the process really holds,
//! not a runtime's heap.

use std::fmt::Write;
use std::io::IsTerminal;
use std::time::Duration;

use supervisor::{Cluster, EventsFormat, Vitals};

/// Draws the view every `every` until the cluster stops.
pub async fn run(cluster: Cluster, events: EventsFormat, every: Duration) {
    let redraw = events == EventsFormat::Human && std::io::stdout().is_terminal();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let rows = cluster.vitals();
        if rows.is_empty() {
            continue;
        }
        let fields = serde_json::json!({ "workers": rows });
        let table = table(&rows);
        if redraw {
            // Home and clear, then the table: a view that stays in place.
            print!("\x1b[H\x1b[2J{table}");
        } else {
            cluster.report("vitals", &fields, &table);
        }
    }
}

/// The rows as a table, one line per worker.
pub fn table(rows: &[Vitals]) -> String {
    let mut out = String::from(
        "worker  state      gen   RSS MiB   CPU %   req/s   requests  missed  restarts\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:>6}  {:<9} {:>4}  {:>8}  {:>6.1}  {:>6.0}  {:>9}  {:>6}  {:>8}",
            row.id,
            format!("{:?}", row.state).to_lowercase(),
            row.generation,
            row.rss >> 20,
            row.cpu_pct,
            row.requests_per_s,
            row.requests,
            row.missed,
            row.restarts,
        );
    }
    out
}
