//! `just scenario NN`: replays a lesson's scripted story with the transcript
//! shown live — the same run the snapshot test makes, plus what the
//! snapshot leaves out (pids, the port, counts, times) and a progress bar
//! while load runs.

// One process, whose stderr nobody shares: progress lines may go out as
// eprintln! writes them (see clippy.toml).
#![allow(clippy::disallowed_macros)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use scenarios::{Script, Transcript};

/// Replay a lesson's scenario scripts and show what they prove.
#[derive(Debug, Parser)]
#[command(name = "scenario", version, about)]
struct Args {
    /// The lesson: 1 to 12 (8 and 08 both work).
    lesson: String,
    /// Only the scripts whose name contains this (`--only node`: the Node twin's).
    #[arg(long)]
    only: Option<String>,
    /// Run this script file instead of the lesson's own (a script of your
    /// own; its name must start with the lesson's number, `08-mine.toml`).
    #[arg(long)]
    script: Option<PathBuf>,
    /// The lesson binary; by default the one next to this program.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Print the lesson's stderr (its own and its workers' logs) at the end.
    #[arg(long)]
    stderr: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let nn = match args.lesson.parse::<u8>() {
        Ok(n @ 1..=12) => format!("{n:02}"),
        _ => bail!("no lesson {:?}: lessons are numbered 01 to 12", args.lesson),
    };
    let paths: Vec<PathBuf> = match &args.script {
        Some(path) => vec![path.clone()],
        None => scenarios::scripts_for(&nn)
            .with_context(|| format!("listing {}", scenarios::scripts_dir().display()))?,
    };
    let scripts = paths
        .into_iter()
        .filter(|path| {
            args.only
                .as_deref()
                .is_none_or(|only| path.to_string_lossy().contains(only))
        })
        // A script of one's own may be named anything: the lesson it
        // belongs to, whose events it may name, is the one asked for.
        .map(|path| match args.script {
            Some(_) => Script::load_for(&path, &nn),
            None => Script::load(&path),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if scripts.is_empty() {
        bail!(
            "no scenario script scenarios/{nn}-*.toml matches: lesson {nn} has none yet, or --only matched nothing"
        );
    }

    let bin = match args.bin {
        Some(bin) => bin,
        None => std::env::current_exe()
            .context("finding this program's folder")?
            .with_file_name(format!("lesson-{nn}")),
    };
    // A Node twin's script needs node, not the lesson's binary.
    let needs_bin = scripts
        .iter()
        .any(|script| script.program == scenarios::script::Program::Lesson);
    if needs_bin && !bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build -p lesson-{nn}` (`just scenario {nn}` does that for you)",
            bin.display()
        );
    }
    let mut all_passed = true;
    for script in scripts {
        let mut transcript = Transcript::live();
        let outcome = scenarios::run(&bin, &script, &mut transcript).await;
        if args.stderr {
            println!(
                "\n--- {}: the lesson's stderr ---\n{}",
                script.name, outcome.stderr
            );
        }
        if outcome.passed() {
            println!("passed: {}\n", script.name);
        } else {
            all_passed = false;
            println!(
                "FAILED: {}\n  - {}\n",
                script.name,
                outcome.failures.join("\n  - ")
            );
        }
    }
    Ok(all_passed)
}
