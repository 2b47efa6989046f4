//! Scripted runs of the lessons, checked by snapshot tests.
//!
//! A scenario is a TOML script (`scenarios/NN-name.toml`) that starts one
//! lesson, drives it — load, signals, a killed worker — and checks what
//! happened. The runner turns each run into a transcript: the steps and
//! their verdicts, with everything that varies (pids, ports, counts, times)
//! left out, so insta can compare it with the snapshot and the book can
//! quote it as the lesson's expected output.
//!
//! Each lesson's `tests/scenario.rs` calls [`snapshot_test`] with its own
//! binary (`env!("CARGO_BIN_EXE_lesson-NN")`): a test can only count on its
//! own package's binaries being built, so the scenario tests live with the
//! lessons and this crate is only their library.

pub mod bench;
pub mod check;
pub mod compare;
pub mod copy;
pub mod exercise;
pub mod gone;
pub mod lesson;
pub mod node;
pub mod runner;
pub mod script;
pub mod transcript;
pub mod vocabulary;

/// The load generator lives in its own crate, `shared/loadgen`, because
/// lessons use it too (lesson 08 drives load through its own rollout).
pub use loadgen as load;

use std::path::{Path, PathBuf};

pub use load::{LoadReport, LoadSpec};
pub use runner::{Failed, Outcome, run};
pub use script::{Script, ScriptError};
pub use transcript::Transcript;

/// The workspace's top folder, found when the program runs.
///
/// Cargo sets `CARGO_MANIFEST_DIR` both when it compiles and when it runs a
/// test or `cargo run`. The compile-time value is not enough: two clones that
/// share one `CARGO_TARGET_DIR` (as `ci-from-clean-clone` does) reuse each
/// other's test binaries, and a path baked in at compile time would then
/// read the other clone's scripts — or a folder that is gone. So the run-time
/// value comes first, then the current folder, and the compile-time value
/// only as the last resort; from each, the nearest ancestor holding
/// `scenarios/` and `lessons/` wins.
/// How the workbook's measuring programs end: nothing more on success, and
/// on failure one `error:` line with the whole cause chain and exit status
/// 2, which scripts can tell apart from a measurement that merely ran.
pub fn exit_code(outcome: anyhow::Result<()>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            supervisor::report::stderr_line(&format!("error: {error:#}"));
            std::process::ExitCode::from(2)
        }
    }
}

pub fn workspace_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).to_owned();
    let candidates = [
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        std::env::current_dir().ok(),
        Some(compiled.clone()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|start| {
            start
                .ancestors()
                .find(|dir| dir.join("scenarios").is_dir() && dir.join("lessons").is_dir())
                .map(Path::to_owned)
        })
        .unwrap_or_else(|| compiled.join(".."))
}

/// The folder that holds the scripts.
pub fn scripts_dir() -> PathBuf {
    workspace_root().join("scenarios")
}

/// The scripts of lesson `nn` (`"08"`), sorted by name.
pub fn scripts_for(nn: &str) -> std::io::Result<Vec<PathBuf>> {
    let prefix = format!("{nn}-");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(scripts_dir())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "toml")
                && path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    scripts.sort();
    Ok(scripts)
}

/// Runs every script of lesson `nn` against `bin` and compares each
/// transcript with its snapshot (`scenarios/snapshots/<script>.snap`).
///
/// Panics — this is a test helper — if there is no script, a script does
/// not parse, a verdict fails (with the transcript and the lesson's stderr),
/// or a transcript differs from its snapshot.
pub fn snapshot_test(bin: &str, nn: &str) {
    let scripts = match scripts_for(nn) {
        Ok(scripts) if !scripts.is_empty() => scripts,
        Ok(_) => panic!("no scenario scripts scenarios/{nn}-*.toml: a lesson needs at least one"),
        Err(error) => panic!("cannot list {}: {error}", scripts_dir().display()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => panic!("cannot start a tokio runtime: {error}"),
    };

    for path in scripts {
        let script = Script::load(&path).unwrap_or_else(|error| panic!("{error}"));
        let outcome = runtime.block_on(run(Path::new(bin), &script, &mut Transcript::quiet()));
        if !outcome.passed() {
            let stderr: Vec<&str> = outcome.stderr.lines().collect();
            let tail = &stderr[stderr.len().saturating_sub(40)..];
            panic!(
                "scenario {} failed:\n  - {}\n\n--- transcript ---\n{}\n--- the lesson's stderr (last {} lines) ---\n{}\n",
                script.name,
                outcome.failures.join("\n  - "),
                outcome.transcript,
                tail.len(),
                tail.join("\n")
            );
        }
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(scripts_dir().join("snapshots"));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_input_file(&path);
        settings.bind(|| {
            insta::assert_snapshot!(script.name.as_str(), outcome.transcript);
        });
    }
}
