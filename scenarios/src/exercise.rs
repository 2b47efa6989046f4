//! Exercises that check themselves: the scenario runner grades a learner.
//!
//! Each lesson declares its exercises in `lessons/NN-*/exercises/exercises.toml`,
//! the way rustlings lists its own in one manifest:
//!
//! ```toml
//! [[exercise]]
//! k = 1                         # exercise 08.1
//! kind = "change"               # change the code, or "predict" then run
//! title = "Carry the usual loop past a worker that crashed"
//! hint = "What does the loop do with a worker that is already gone?"
//! fails_shipped = "rollout_finished"   # change only: see below
//! ```
//!
//! Beside it, by name, exercise `NN.k` has its scenario script `NN.k.toml`
//! (the runner's own format) and, for a change-the-code exercise, the
//! reference solution `NN.k.patch`. The scripts live here, not in
//! `scenarios/`, because they are meant to fail on the lesson as shipped:
//! the lessons' snapshot tests glob `scenarios/NN-*.toml` only.
//!
//! A change-the-code exercise makes two promises, and [`prove_lesson`]
//! (each lesson's `tests/exercises.rs`) checks both: its scenario fails on
//! the lesson as shipped — at the check named by `fails_shipped`, so it
//! fails for the reason the exercise is about — and passes once the patch
//! is applied. The patch goes to a copy of the workspace, never to the
//! working tree (see [`crate::copy`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::runner::{Failed, Outcome};
use crate::script::Script;
use crate::transcript::Transcript;

/// What a learner does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Edit the lesson where `// EXERCISE NN.k` marks the place, until the
    /// scenario passes.
    Change,
    /// Answer a question about behaviour, then run the scenario that shows
    /// it (the answer is in the chapter, folded away).
    Predict,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Change => "change the code",
            Kind::Predict => "predict, then run",
        }
    }
}

/// One exercise, read from its lesson's manifest.
#[derive(Debug, Clone)]
pub struct Exercise {
    /// The lesson's number, `"08"`.
    pub lesson: String,
    /// The lesson's folder, `<root>/lessons/08-rolling-restart`.
    pub lesson_dir: PathBuf,
    /// Its number within the lesson: exercise `08.1` has `k = 1`.
    pub k: u32,
    pub kind: Kind,
    pub title: String,
    /// A question that points the way, never the solution.
    pub hint: String,
    /// Part of the text of the first check that fails on the lesson as
    /// shipped (change-the-code exercises).
    pub fails_shipped: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    exercise: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    k: u32,
    kind: Kind,
    title: String,
    hint: String,
    fails_shipped: Option<String>,
}

/// Why the exercises could not be read or run.
#[derive(Debug, thiserror::Error)]
pub enum ExerciseError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("lesson {lesson} has no exercise {k}: `just exercise` lists them all")]
    NoSuchExercise { lesson: String, k: u32 },
    #[error("lesson {0} has no exercises yet: `just exercise` lists the ones there are")]
    NoExercises(String),
    #[error(transparent)]
    Script(#[from] crate::script::ScriptError),
}

impl Exercise {
    /// `08.1`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.lesson, self.k)
    }

    /// The folder of the manifest, the scripts and the patches.
    pub fn dir(&self) -> PathBuf {
        self.lesson_dir.join("exercises")
    }

    /// The scenario script that grades it.
    pub fn scenario(&self) -> PathBuf {
        self.dir().join(format!("{}.toml", self.id()))
    }

    /// The reference solution (change-the-code exercises).
    pub fn patch(&self) -> Option<PathBuf> {
        (self.kind == Kind::Change).then(|| self.dir().join(format!("{}.patch", self.id())))
    }

    /// The marker a learner looks for in the lesson's code.
    pub fn marker(&self) -> String {
        format!("EXERCISE {}", self.id())
    }

    /// The files the reference patch changes, relative to the workspace
    /// root (from its `+++ b/…` lines): what `just solution` refuses to
    /// overwrite, and what a learner's attempt is told apart by.
    pub fn files(&self) -> Result<Vec<String>, ExerciseError> {
        let Some(patch) = self.patch() else {
            return Ok(Vec::new());
        };
        let text = read(&patch)?;
        let files: BTreeSet<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("+++ b/"))
            .map(|path| path.trim().to_owned())
            .collect();
        Ok(files.into_iter().collect())
    }

    /// Its scenario, read and checked.
    pub fn script(&self) -> Result<Script, ExerciseError> {
        Ok(Script::load(&self.scenario())?)
    }
}

fn read(path: &Path) -> Result<String, ExerciseError> {
    std::fs::read_to_string(path).map_err(|source| ExerciseError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every exercise of every lesson under `root`, in order.
pub fn all(root: &Path) -> Result<Vec<Exercise>, ExerciseError> {
    let lessons = root.join("lessons");
    let entries = std::fs::read_dir(&lessons).map_err(|source| ExerciseError::Read {
        path: lessons.clone(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join("exercises/exercises.toml").is_file())
        .collect();
    dirs.sort();
    let mut exercises = Vec::new();
    for dir in dirs {
        exercises.extend(of_lesson_dir(&dir)?);
    }
    Ok(exercises)
}

/// The exercises of lesson `nn` (`"08"`), in order; an error if it has none.
pub fn of_lesson(root: &Path, nn: &str) -> Result<Vec<Exercise>, ExerciseError> {
    let exercises: Vec<Exercise> = all(root)?
        .into_iter()
        .filter(|exercise| exercise.lesson == nn)
        .collect();
    if exercises.is_empty() {
        return Err(ExerciseError::NoExercises(nn.to_owned()));
    }
    Ok(exercises)
}

/// Exercise `k` of lesson `nn`.
pub fn find(root: &Path, nn: &str, k: u32) -> Result<Exercise, ExerciseError> {
    of_lesson(root, nn)?
        .into_iter()
        .find(|exercise| exercise.k == k)
        .ok_or_else(|| ExerciseError::NoSuchExercise {
            lesson: nn.to_owned(),
            k,
        })
}

fn of_lesson_dir(dir: &Path) -> Result<Vec<Exercise>, ExerciseError> {
    let path = dir.join("exercises/exercises.toml");
    let name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lesson = name.get(..2).unwrap_or_default().to_owned();
    let problem = |message: String| ExerciseError::Manifest {
        path: path.clone(),
        message,
    };
    let manifest: Manifest = toml::from_str(&read(&path)?).map_err(|error| {
        problem(format!(
            "{} (each [[exercise]] has k, kind, title, hint and, for kind = \"change\", fails_shipped)",
            error.message().trim()
        ))
    })?;
    let mut exercises = Vec::new();
    for (index, entry) in manifest.exercise.into_iter().enumerate() {
        let expected = index as u32 + 1;
        if entry.k != expected {
            return Err(problem(format!(
                "exercise {} has k = {}: number them 1, 2, 3 … in order",
                expected, entry.k
            )));
        }
        match (entry.kind, &entry.fails_shipped) {
            (Kind::Change, None) => {
                return Err(problem(format!(
                    "exercise {lesson}.{} changes the code: say which check fails on the lesson as shipped (fails_shipped = \"…\")",
                    entry.k
                )));
            }
            (Kind::Predict, Some(_)) => {
                return Err(problem(format!(
                    "exercise {lesson}.{} is a prediction: its scenario passes as shipped, so it has no fails_shipped",
                    entry.k
                )));
            }
            _ => {}
        }
        exercises.push(Exercise {
            lesson: lesson.clone(),
            lesson_dir: dir.to_owned(),
            k: entry.k,
            kind: entry.kind,
            title: entry.title,
            hint: entry.hint,
            fails_shipped: entry.fails_shipped,
        });
    }
    Ok(exercises)
}

/// Runs the exercise's scenario against the lesson binary `bin`.
pub async fn check(
    bin: &Path,
    exercise: &Exercise,
    transcript: &mut Transcript,
) -> Result<Outcome, ExerciseError> {
    let script = exercise.script()?;
    Ok(crate::run(bin, &script, transcript).await)
}

/// What a learner reads after a run: pass, or the first check that failed —
/// what it expected, what happened — and the hint.
pub fn verdict(exercise: &Exercise, outcome: &Outcome) -> String {
    let mut text = String::new();
    let id = exercise.id();
    if outcome.passed() {
        let _ = writeln!(text, "✓ exercise {id} passes: {}", exercise.title);
        if exercise.kind == Kind::Predict {
            let _ = writeln!(
                text,
                "  Did you predict it? The answer is under exercise {id} in the chapter."
            );
        }
        return text;
    }
    let _ = writeln!(
        text,
        "✗ exercise {id} does not pass yet: {}",
        exercise.title
    );
    match outcome.failed.first() {
        Some(first) => {
            let _ = writeln!(
                text,
                "  The first check that failed{}:",
                at(exercise, first)
            );
            let _ = writeln!(text, "    expected: {}", first.expected);
            let _ = writeln!(text, "    happened: {}", first.happened);
        }
        None => {
            let _ = writeln!(text, "  {}", outcome.failures.join("; "));
        }
    }
    let _ = writeln!(text, "  Hint: {}", exercise.hint);
    text
}

fn at(exercise: &Exercise, failed: &Failed) -> String {
    let script = exercise
        .scenario()
        .strip_prefix(
            exercise
                .lesson_dir
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("")),
        )
        .map(Path::to_owned)
        .unwrap_or_else(|_| exercise.scenario());
    match failed.line {
        Some(line) => format!(" ({}, line {line})", script.display()),
        None => " (after the last step)".into(),
    }
}

/// The CI test of one lesson's exercises: a prediction's scenario passes on
/// `shipped` (the lesson as shipped, this package's binary); a
/// change-the-code exercise's scenario fails on it at the check its
/// manifest names, and passes on a copy of the workspace with the reference
/// patch applied. Panics — it is a test helper — with the
/// transcript of whatever broke either promise.
pub fn prove_lesson(shipped: &str, nn: &str) {
    let root = crate::workspace_root();
    let exercises = of_lesson(&root, nn).unwrap_or_else(|error| panic!("{error}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("cannot start a tokio runtime: {error}"));
    let run = |bin: &Path, exercise: &Exercise| {
        runtime
            .block_on(check(bin, exercise, &mut Transcript::quiet()))
            .unwrap_or_else(|error| panic!("{error}"))
    };

    // A prediction's scenario shows the answer on the lesson as shipped.
    for exercise in exercises.iter().filter(|e| e.kind == Kind::Predict) {
        let outcome = run(Path::new(shipped), exercise);
        assert!(
            outcome.passed(),
            "exercise {}'s scenario shows its answer, so it must pass on the lesson as shipped; it failed:\n{}\n{}",
            exercise.id(),
            verdict(exercise, &outcome),
            outcome.transcript
        );
    }

    for exercise in exercises.iter().filter(|e| e.kind == Kind::Change) {
        let id = exercise.id();
        let outcome = run(Path::new(shipped), exercise);
        let first = outcome.failed.first();
        let wanted = exercise.fails_shipped.as_deref().unwrap_or_default();
        assert!(
            first.is_some_and(|first| first.expected.contains(wanted)),
            "exercise {id}'s scenario must fail on the lesson as shipped, first at a check that mentions {wanted:?}; it {}:\n{}",
            match first {
                Some(first) => format!("failed first at {first:?}"),
                None => "passed".into(),
            },
            outcome.transcript
        );

        let patch = exercise.patch().unwrap_or_default();
        let copy = crate::copy::WorkspaceCopy::of(&root).unwrap_or_else(|error| panic!("{error}"));
        copy.apply(&patch)
            .unwrap_or_else(|error| panic!("exercise {id}: {error}"));
        let solved = copy
            .build(&format!("lesson-{nn}"))
            .unwrap_or_else(|error| panic!("exercise {id} with its patch: {error}"));
        let outcome = run(&solved, exercise);
        assert!(
            outcome.passed(),
            "exercise {id}'s scenario must pass with {} applied; it failed:\n{}\n{}",
            patch.display(),
            verdict(exercise, &outcome),
            outcome.transcript
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lesson folder `08-demo` holding `manifest` as its exercises.toml.
    fn lesson_with(manifest: &str) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let dir = root.path().join("lessons/08-demo");
        std::fs::create_dir_all(dir.join("exercises")).unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(dir.join("exercises/exercises.toml"), manifest)
            .unwrap_or_else(|error| panic!("{error}"));
        (root, dir)
    }

    fn problem(manifest: &str) -> String {
        let (_root, dir) = lesson_with(manifest);
        match of_lesson_dir(&dir) {
            Ok(exercises) => panic!("expected an error, got {exercises:?}"),
            Err(error) => error.to_string(),
        }
    }

    const ONE: &str = "[[exercise]]\nk = 1\nkind = \"change\"\ntitle = \"t\"\nhint = \"h\"\nfails_shipped = \"x\"\n";

    #[test]
    fn a_manifest_names_each_exercise_and_its_files() {
        let (_root, dir) = lesson_with(ONE);
        let exercises = of_lesson_dir(&dir).unwrap_or_else(|error| panic!("{error}"));
        let [exercise] = exercises.as_slice() else {
            panic!("expected one exercise, got {exercises:?}");
        };
        assert_eq!(exercise.id(), "08.1");
        assert_eq!(exercise.marker(), "EXERCISE 08.1");
        assert!(
            exercise
                .scenario()
                .ends_with("lessons/08-demo/exercises/08.1.toml")
        );
        assert_eq!(
            exercise.patch().as_deref(),
            Some(dir.join("exercises/08.1.patch").as_path())
        );
    }

    #[test]
    fn manifest_mistakes_say_what_to_write() {
        let message = problem(&ONE.replace("k = 1", "k = 2"));
        assert!(message.contains("number them 1, 2, 3"), "{message}");
        let message = problem(&ONE.replace("fails_shipped = \"x\"\n", ""));
        assert!(message.contains("fails_shipped"), "{message}");
        let message = problem(&ONE.replace("kind = \"change\"", "kind = \"predict\""));
        assert!(message.contains("no fails_shipped"), "{message}");
        let message = problem(&ONE.replace("hint", "hnit"));
        assert!(message.contains("exercises.toml"), "{message}");
    }

    #[test]
    fn a_failed_run_tells_what_was_expected_what_happened_and_the_hint() {
        let (_root, dir) = lesson_with(ONE);
        let exercises = of_lesson_dir(&dir).unwrap_or_else(|error| panic!("{error}"));
        let outcome = Outcome {
            transcript: String::new(),
            failures: vec!["check x ✗".into()],
            failed: vec![Failed {
                line: Some(12),
                expected: "last(rollout_finished.outcome) == \"completed\"".into(),
                happened: "the left side was \"rolled_back\", the right side \"completed\"".into(),
            }],
            stderr: String::new(),
            measured: Default::default(),
        };
        let text = verdict(&exercises[0], &outcome);
        assert!(text.contains("does not pass yet"), "{text}");
        assert!(text.contains("exercises/08.1.toml, line 12"), "{text}");
        assert!(
            text.contains("expected: last(rollout_finished.outcome)"),
            "{text}"
        );
        assert!(
            text.contains("happened: the left side was \"rolled_back\""),
            "{text}"
        );
        assert!(text.contains("Hint: h"), "{text}");
    }
}
