//! `just compare NN`: the usual answer in Node and the Rust lesson, under
//! the same script, side by side.
//!
//! Runs every comparison of the lesson (`scenarios/compare/NN-*.toml`),
//! each program `rounds` times, alternating, and prints one markdown table
//! per comparison: what the clients saw (ok, failed and how), requests per
//! second, how long the operation took, and each worker's memory. With
//! `--out` the tables are also written to a file (the book includes
//! `book/measured/NN-compare.md`).

// One process, whose stderr nobody shares: progress lines may go out as
// eprintln! writes them (see clippy.toml).
#![allow(clippy::disallowed_macros)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use scenarios::Transcript;
use scenarios::bench::Machine;
use scenarios::compare::{Run, comparisons_for, table};

/// Run a lesson's Node twin and its Rust lesson under the same scripts.
#[derive(Debug, Parser)]
#[command(name = "compare", version, about)]
struct Args {
    /// The lesson: 1 to 12 (8 and 08 both work).
    lesson: String,
    /// Only the comparisons whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Rounds per program, overriding each comparison's own.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: Option<u32>,
    /// The lesson binary; by default the one next to this program.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Also write the tables to this file (its folder must exist).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    scenarios::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let nn = match args.lesson.parse::<u8>() {
        Ok(n @ 1..=12) => format!("{n:02}"),
        _ => bail!("no lesson {:?}: lessons are numbered 01 to 12", args.lesson),
    };
    let comparisons: Vec<_> = comparisons_for(&nn)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter(|c| {
            args.only
                .as_deref()
                .is_none_or(|only| c.name.contains(only))
        })
        .collect();
    if comparisons.is_empty() {
        bail!(
            "no comparison scenarios/compare/{nn}-*.toml matches: lesson {nn} has none yet, or --only matched nothing"
        );
    }
    let bin = match args.bin {
        Some(bin) => bin,
        None => std::env::current_exe()
            .context("finding this program's folder")?
            .with_file_name(format!("lesson-{nn}")),
    };
    if !bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p lesson-{nn}` (`just compare {nn}` does that for you)",
            bin.display()
        );
    }
    let node = scenarios::node::node()?;
    let version = std::process::Command::new(&node)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    let build = if bin.components().any(|part| part.as_os_str() == "release") {
        "release build"
    } else {
        "debug build: figures for Rust are slower than they would be in release"
    };

    let mut markdown = format!(
        "Machine: {}; Node {version}; Rust lesson: {build}; load generator on the same machine; {}.\n",
        Machine::here(),
        Machine::today()
    );
    for comparison in &comparisons {
        let rounds = args.rounds.unwrap_or(comparison.settings.rounds);
        let mut runs = Vec::new();
        for round in 1..=rounds {
            for side in comparison.order(round) {
                eprintln!("{}: {side:?}, round {round} of {rounds}", comparison.name);
                let outcome =
                    scenarios::run(&bin, comparison.script(side), &mut Transcript::quiet()).await;
                runs.push(Run::new(side, round, &comparison.settings, &outcome));
            }
        }
        markdown.push('\n');
        markdown.push_str(&table(comparison, &runs, &format!("lesson-{nn}")));
    }
    print!("{markdown}");
    if let Some(out) = args.out {
        std::fs::write(&out, &markdown).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("written to {}", out.display());
    }
    Ok(())
}
