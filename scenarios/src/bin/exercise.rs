//! `just exercise`, `just exercise NN [K]` and `just solution NN K`: the
//! workbook's exercises, graded by the scenario runner.
//!
//! With no lesson it lists every exercise and where the learner stands,
//! worked out now from the files: a reference solution that is applied, a
//! last run's verdict on files that have not changed since, or files
//! changed since that run. Running every scenario to list them would take
//! minutes; a verdict is only ever as old as the files it was given on.

// One process, whose stderr nobody shares (see clippy.toml).
#![allow(clippy::disallowed_macros)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Parser;
use scenarios::Transcript;
use scenarios::exercise::{self, Exercise};

/// Run the workbook's exercises and tell whether a change holds.
#[derive(Debug, Parser)]
#[command(name = "exercise", version, about)]
struct Args {
    /// The lesson: 1 to 12 (8 and 08 both work); none lists every exercise.
    lesson: Option<String>,
    /// The exercise's number in the lesson; none runs each of the lesson's.
    k: Option<u32>,
    /// Apply the reference solution of exercise LESSON K to the working tree.
    #[arg(long, requires = "k")]
    solution: bool,
    /// The lesson binary; by default the one next to this program.
    #[arg(long)]
    bin: Option<PathBuf>,
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
    let root = scenarios::workspace_root();
    let Some(lesson) = args.lesson else {
        list(&root)?;
        return Ok(true);
    };
    let nn = match lesson.parse::<u8>() {
        Ok(n @ 1..=12) => format!("{n:02}"),
        _ => bail!("no lesson {lesson:?}: lessons are numbered 01 to 12"),
    };
    if args.solution {
        let k = args.k.context("which exercise? `just solution 08 1`")?;
        solution(&root, &exercise::find(&root, &nn, k)?)?;
        return Ok(true);
    }
    let chosen = match args.k {
        Some(k) => vec![exercise::find(&root, &nn, k)?],
        None => exercise::of_lesson(&root, &nn)?,
    };
    let bin = match args.bin {
        Some(bin) => bin,
        None => std::env::current_exe()
            .context("finding this program's folder")?
            .with_file_name(format!("lesson-{nn}")),
    };
    if !bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build -p lesson-{nn}` (`just exercise {nn}` does that for you)",
            bin.display()
        );
    }

    let mut all_passed = true;
    for exercise in chosen {
        println!(
            "── exercise {} ({}): {}",
            exercise.id(),
            exercise.kind.as_str(),
            exercise.title
        );
        let mut transcript = Transcript::live();
        let outcome = exercise::check(&bin, &exercise, &mut transcript).await?;
        println!("\n{}", exercise::verdict(&exercise, &outcome));
        record(&root, &exercise, outcome.passed());
        all_passed &= outcome.passed();
    }
    Ok(all_passed)
}

/// Every exercise, one line each, with where the learner stands.
fn list(root: &Path) -> anyhow::Result<()> {
    let exercises = exercise::all(root)?;
    if exercises.is_empty() {
        println!("no exercises yet");
        return Ok(());
    }
    for exercise in &exercises {
        println!(
            "{:<6} {:<18} {:<36} {}",
            exercise.id(),
            exercise.kind.as_str(),
            state(root, exercise),
            exercise.title
        );
    }
    println!(
        "\nRun one with `just exercise NN K` (all of a lesson's: `just exercise NN`); `just solution NN K` applies the reference solution."
    );
    Ok(())
}

/// Where the learner stands on `exercise`, from the files as they are now.
fn state(root: &Path, exercise: &Exercise) -> String {
    if let Some(patch) = exercise.patch()
        && git(root, &["apply", "--reverse", "--check"], &patch).is_ok()
    {
        return "solved: reference solution applied".into();
    }
    let Some(last) = std::fs::read_to_string(record_path(root, exercise)).ok() else {
        return "not run yet".into();
    };
    let mut words = last.split_whitespace();
    let (verdict, hash) = (words.next(), words.next());
    if hash != Some(fingerprint(root, exercise).as_str()) {
        return "changed since its last run".into();
    }
    match verdict {
        Some("passed") => "passed (files unchanged since)".into(),
        _ => "failed (files unchanged since)".into(),
    }
}

/// `target/exercises/last/08.1`: the last verdict and the fingerprint of
/// the files it was given on. Best effort: a run whose verdict cannot be
/// kept is still a run.
fn record(root: &Path, exercise: &Exercise, passed: bool) {
    let path = record_path(root, exercise);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let verdict = if passed { "passed" } else { "failed" };
    let _ = std::fs::write(
        &path,
        format!("{verdict} {}\n", fingerprint(root, exercise)),
    );
}

fn record_path(root: &Path, exercise: &Exercise) -> PathBuf {
    root.join("target/exercises/last").join(exercise.id())
}

/// A hash of what the exercise is about: the files its solution changes
/// (or, for a prediction, its scenario), as they are now.
fn fingerprint(root: &Path, exercise: &Exercise) -> String {
    let mut files: Vec<PathBuf> = exercise
        .files()
        .unwrap_or_default()
        .into_iter()
        .map(|file| root.join(file))
        .collect();
    files.push(exercise.scenario());
    let mut hasher = DefaultHasher::new();
    for file in files {
        std::fs::read(&file).ok().hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

/// `just solution NN K`: the reference patch, applied to the working tree,
/// unless the learner has uncommitted changes to a file it touches.
fn solution(root: &Path, exercise: &Exercise) -> anyhow::Result<()> {
    let id = exercise.id();
    let Some(patch) = exercise.patch() else {
        bail!(
            "exercise {id} is a prediction: its answer is in the chapter, under exercise {id}, folded away"
        );
    };
    if git(root, &["apply", "--reverse", "--check"], &patch).is_ok() {
        println!(
            "exercise {id}'s reference solution is applied already: `just exercise {id_sp}` runs it",
            id_sp = id.replace('.', " ")
        );
        return Ok(());
    }
    let files = exercise.files()?;
    let mut diff = Command::new("git");
    diff.args(["diff", "--quiet", "--"])
        .args(&files)
        .current_dir(root);
    let clean = diff
        .status()
        .context("running git diff (is git installed?)")?;
    if !clean.success() {
        bail!(
            "you have uncommitted changes to {}: commit or stash them (git stash) before `just solution {} {}`, so that nothing of yours is overwritten",
            files.join(", "),
            exercise.lesson,
            exercise.k
        );
    }
    git(root, &["apply", "--check"], &patch).map_err(|output| {
        anyhow::anyhow!(
            "the reference solution does not apply to {}: {output}",
            files.join(", ")
        )
    })?;
    git(root, &["apply"], &patch)
        .map_err(|output| anyhow::anyhow!("git apply failed: {output}"))?;
    println!(
        "applied {} to {}.\nNow `just exercise {} {}` should pass; `git checkout -- {}` takes it back.",
        patch.strip_prefix(root).unwrap_or(&patch).display(),
        files.join(", "),
        exercise.lesson,
        exercise.k,
        files.join(" ")
    );
    println!("Read the diff (`git diff`) before you move on: the why is in its comments.");
    Ok(())
}

/// `git <args> <patch>` in `root`; the output as the error.
fn git(root: &Path, args: &[&str], patch: &Path) -> Result<(), String> {
    let output = Command::new("git")
        .args(args)
        .arg(patch)
        .current_dir(root)
        .output()
        .map_err(|error| format!("cannot run git: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
