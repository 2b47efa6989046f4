//! The workbook checks itself, the way rustlings checks its exercises.
//!
//! - Every lesson (`lessons/NN-*`) has its chapter (`book/src/NN-*.md`), at
//!   least one scenario script (`scenarios/NN-*.toml`) and, for each script,
//!   its snapshot (`scenarios/snapshots/<script stem>.snap`).
//! - `book/src/SUMMARY.md` links every chapter file in `book/src`, and every
//!   link that is not a draft (`[title]()`) points at a file that exists.
//! - Every `{{#include …}}` and `{{#rustdoc_include …}}` in the book points
//!   at a file that exists; a named anchor exists in that file (both
//!   `ANCHOR:` and `ANCHOR_END:`); a line range fits in the file; and a
//!   snapshot is included from the first line of its body, never with its
//!   insta header.
//!
//! - Every exercise has its scenario, its patch and marker (change the
//!   code), its chapter section, and its CI test (see the test below).
//! - Every question a chapter leaves to think about carries its answer,
//!   folded away in a `<details>` block.
//!
//! mdBook only logs a missing include and builds the book anyway, so these
//! checks are what stop the book from drifting. Each test collects every
//! problem it finds and reports them all at once.

use std::fs;
use std::path::{Path, PathBuf};

/// The workspace root: this crate lives in `<root>/scenarios`.
fn root() -> PathBuf {
    scenarios::workspace_root()
}

/// The names of the entries in `dir`, sorted; empty if `dir` cannot be read.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `NN` if `name` starts with two digits and a dash (`08-rolling-restart`).
fn lesson_number(name: &str) -> Option<&str> {
    let number = name.get(..2)?;
    let is_numbered = number.bytes().all(|b| b.is_ascii_digit()) && name[2..].starts_with('-');
    is_numbered.then_some(number)
}

/// `path` (relative to the workspace root) with its `..` and `.` resolved,
/// for messages: `book/src/../measured/x.md` → `book/measured/x.md`.
fn from_root(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// Fails the test with every problem found, one per line.
fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s)\n  - {}\n",
        problems.len(),
        problems.join("\n  - ")
    );
}

#[test]
fn every_lesson_has_a_chapter_a_scenario_and_a_snapshot() {
    let root = root();
    let chapters = names(&root.join("book/src"));
    let scripts = names(&root.join("scenarios"));
    let mut problems = Vec::new();

    let lessons: Vec<String> = names(&root.join("lessons"))
        .into_iter()
        .filter(|name| lesson_number(name).is_some() && root.join("lessons").join(name).is_dir())
        .collect();
    if lessons.is_empty() {
        problems.push("lessons/: no lesson folders (NN-name) found".to_owned());
    }

    for lesson in &lessons {
        let Some(nn) = lesson_number(lesson) else {
            continue;
        };
        let prefix = format!("{nn}-");

        if !chapters
            .iter()
            .any(|chapter| chapter.starts_with(&prefix) && chapter.ends_with(".md"))
        {
            problems.push(format!(
                "lessons/{lesson}: no chapter book/src/{nn}-*.md (expected book/src/{lesson}.md)"
            ));
        }

        let lesson_scripts: Vec<&String> = scripts
            .iter()
            .filter(|script| script.starts_with(&prefix) && script.ends_with(".toml"))
            .collect();
        if lesson_scripts.is_empty() {
            problems.push(format!(
                "lessons/{lesson}: no scenario script scenarios/{nn}-*.toml"
            ));
        }
        for script in lesson_scripts {
            let stem = script.trim_end_matches(".toml");
            let snapshot = format!("scenarios/snapshots/{stem}.snap");
            if !root.join(&snapshot).is_file() {
                problems.push(format!(
                    "scenarios/{script}: no snapshot {snapshot} (run `cargo insta review` after `cargo test -p scenarios`)"
                ));
            }
        }
    }

    report("lessons", &problems);
}

/// Every exercise a lesson declares (`lessons/NN-*/exercises/exercises.toml`)
/// has its scenario, which parses; a change-the-code exercise has its
/// reference patch, which touches only files that exist, one of which
/// carries the `// EXERCISE NN.k` marker; the lesson has the test that
/// runs its scenarios (`tests/exercises.rs`); the chapter has the exercise's
/// section (`### Exercise NN.k`), and a prediction's section folds its
/// answer away in a `<details>` block. No file in an `exercises/` folder is
/// left undeclared.
#[test]
fn every_exercise_has_its_scenario_patch_marker_and_chapter_section() {
    let root = root();
    let mut problems = Vec::new();
    let exercises = match scenarios::exercise::all(&root) {
        Ok(exercises) => exercises,
        Err(error) => return report("exercises", &[error.to_string()]),
    };
    let chapters = names(&root.join("book/src"));
    let mut declared: Vec<PathBuf> = Vec::new();

    for exercise in &exercises {
        let id = exercise.id();
        let scenario = exercise.scenario();
        declared.push(scenario.clone());
        if let Err(error) = exercise.script() {
            problems.push(format!("exercise {id}: {error}"));
        }
        if let Some(patch) = exercise.patch() {
            declared.push(patch.clone());
            problems.extend(patch_problems(&root, exercise, &patch));
        }
        let test = exercise.lesson_dir.join("tests/exercises.rs");
        let proves = fs::read_to_string(&test)
            .is_ok_and(|source| source.contains("exercise::prove_lesson("));
        if !proves {
            problems.push(format!(
                "exercise {id}: {} does not call scenarios::exercise::prove_lesson (the CI test of its scenario and patch)",
                relative(&root, &test)
            ));
        }
        problems.extend(section_problems(&root, &chapters, exercise));
    }

    for lesson in names(&root.join("lessons")) {
        let dir = root.join("lessons").join(&lesson).join("exercises");
        for name in names(&dir) {
            let path = dir.join(&name);
            if name != "exercises.toml" && !declared.contains(&path) {
                problems.push(format!(
                    "{}: not an exercise declared in exercises.toml (NN.K.toml, NN.K.patch)",
                    relative(&root, &path)
                ));
            }
        }
    }

    report("exercises", &problems);
}

/// `path` from the workspace root, as a problem names it.
fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A change-the-code exercise's patch touches files that exist, and one of
/// them carries the marker where the learner's change goes.
fn patch_problems(
    root: &Path,
    exercise: &scenarios::exercise::Exercise,
    patch: &Path,
) -> Vec<String> {
    let id = exercise.id();
    let mut problems = Vec::new();
    match exercise.files() {
        Ok(files) if files.is_empty() => problems.push(format!(
            "exercise {id}: {} changes no file",
            relative(root, patch)
        )),
        Ok(files) => {
            let mut marked = false;
            for file in &files {
                match fs::read_to_string(root.join(file)) {
                    Ok(source) => marked |= source.contains(&exercise.marker()),
                    Err(_) => problems.push(format!(
                        "exercise {id}: {} changes {file}, which does not exist",
                        relative(root, patch)
                    )),
                }
            }
            if !marked {
                problems.push(format!(
                    "exercise {id}: no `// {}` marker in {} (where the learner's change goes)",
                    exercise.marker(),
                    files.join(", ")
                ));
            }
        }
        Err(error) => problems.push(format!("exercise {id}: {error}")),
    }
    problems
}

/// The exercise's section in its chapter: there, saying how to run it, and
/// for a prediction, its answer folded away.
fn section_problems(
    root: &Path,
    chapters: &[String],
    exercise: &scenarios::exercise::Exercise,
) -> Vec<String> {
    let id = exercise.id();
    let mut problems = Vec::new();
    let prefix = format!("{}-", exercise.lesson);
    let chapter = chapters
        .iter()
        .find(|name| name.starts_with(&prefix) && name.ends_with(".md"));
    let text = chapter
        .and_then(|name| fs::read_to_string(root.join("book/src").join(name)).ok())
        .unwrap_or_default();
    let heading = format!("### Exercise {id}");
    match text.split_once(&heading) {
        None => problems.push(format!(
            "exercise {id}: its chapter book/src/{}-*.md has no section `{heading}: …`",
            exercise.lesson
        )),
        Some((_, section)) => {
            let section = section.split("\n#").next().unwrap_or_default();
            let folded = section.contains("<details>");
            if exercise.kind == scenarios::exercise::Kind::Predict && !folded {
                problems.push(format!(
                    "exercise {id} is a prediction: its section needs the answer in a <details> block"
                ));
            }
            if !section.contains(&format!("just exercise {} {}", exercise.lesson, exercise.k)) {
                problems.push(format!(
                    "exercise {id}: its section does not say how to run it (`just exercise {} {}`)",
                    exercise.lesson, exercise.k
                ));
            }
        }
    }
    problems
}

/// The targets of the `[title](target)` links in SUMMARY.md, in order; a
/// draft chapter's target is empty.
fn summary_links(summary: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = summary;
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find(')') else {
            break;
        };
        links.push(rest[..end].trim().to_owned());
        rest = &rest[end + 1..];
    }
    links
}

/// Every claim the book makes about Node is backed by Node: each lesson has
/// a Node twin (`lessons/NN-*/node/*.js`), at least one scenario that runs
/// it (`node = "…"` in `scenarios/NN-*.toml`), and at least one side-by-side
/// comparison (`scenarios/compare/NN-*.toml`) that `just compare NN` runs.
#[test]
fn every_lesson_has_a_node_twin_its_scenario_and_a_comparison() {
    let root = root();
    let scripts = names(&root.join("scenarios"));
    let comparisons = names(&root.join("scenarios/compare"));
    let mut problems = Vec::new();
    for lesson in names(&root.join("lessons")) {
        let Some(nn) = lesson_number(&lesson) else {
            continue;
        };
        let twins: Vec<String> = names(&root.join("lessons").join(&lesson).join("node"))
            .into_iter()
            .filter(|name| name.ends_with(".js"))
            .collect();
        if twins.is_empty() {
            problems.push(format!(
                "lessons/{lesson}: no Node twin (lessons/{lesson}/node/*.js)"
            ));
        }
        let prefix = format!("{nn}-");
        let runs_node = scripts
            .iter()
            .filter(|name| name.starts_with(&prefix) && name.ends_with(".toml"))
            .filter_map(|name| scenarios::Script::load(&root.join("scenarios").join(name)).ok())
            .any(|script| matches!(script.program, scenarios::script::Program::Node(_)));
        if !runs_node {
            problems.push(format!(
                "lessons/{lesson}: no scenario runs its Node twin (node = \"…\" in scenarios/{nn}-*.toml)"
            ));
        }
        if !comparisons
            .iter()
            .any(|name| name.starts_with(&prefix) && name.ends_with(".toml"))
        {
            problems.push(format!(
                "lessons/{lesson}: no side-by-side comparison scenarios/compare/{nn}-*.toml (just compare {nn})"
            ));
        }
    }
    report("Node twins", &problems);
}

/// Every side-by-side comparison (`scenarios/compare/NN-*.toml`) reads,
/// names a Node twin that exists, and belongs to a lesson that exists, so
/// that `just compare NN` cannot fail on a typo after minutes of running.
#[test]
fn every_comparison_reads_and_names_a_twin_that_exists() {
    let root = root();
    let dir = root.join("scenarios/compare");
    let mut problems = Vec::new();
    for name in names(&dir) {
        if !name.ends_with(".toml") {
            continue;
        }
        let Some(nn) = lesson_number(&name) else {
            problems.push(format!(
                "scenarios/compare/{name}: the name must start with a lesson number (08-…)"
            ));
            continue;
        };
        match scenarios::compare::Comparison::load(&dir.join(&name)) {
            Ok(comparison) => {
                if let Err(error) = scenarios::node::twin(&root, nn, &comparison.settings.node) {
                    problems.push(format!("scenarios/compare/{name}: {error}"));
                }
            }
            Err(error) => problems.push(error),
        }
    }
    report("comparisons", &problems);
}

#[test]
fn summary_lists_every_chapter() {
    let src = root().join("book/src");
    let mut problems = Vec::new();

    let summary = match fs::read_to_string(src.join("SUMMARY.md")) {
        Ok(summary) => summary,
        Err(error) => {
            report("SUMMARY.md", &[format!("book/src/SUMMARY.md: {error}")]);
            return;
        }
    };

    // Links without their #fragment; drafts (empty) and web links left out.
    let links: Vec<String> = summary_links(&summary)
        .into_iter()
        .map(|link| link.split('#').next().unwrap_or_default().to_owned())
        .filter(|link| !link.is_empty() && !link.contains("://"))
        .collect();

    for link in &links {
        if !src.join(link).is_file() {
            problems.push(format!(
                "book/src/SUMMARY.md: links {link}, which does not exist in book/src"
            ));
        }
    }

    for chapter in names(&src) {
        if chapter.ends_with(".md") && chapter != "SUMMARY.md" && !links.contains(&chapter) {
            problems.push(format!(
                "book/src/{chapter}: not linked from SUMMARY.md, so the book never shows it"
            ));
        }
    }

    report("SUMMARY.md", &problems);
}

/// One `{{#include …}}` or `{{#rustdoc_include …}}` in a chapter.
#[derive(Debug)]
struct Include {
    /// 1-based line of the chapter it is on.
    line: usize,
    /// The file, relative to the chapter's folder.
    path: String,
    /// What follows the path's first `:`, if anything: an anchor or a line range.
    selector: Option<String>,
}

/// Every include in `chapter`, skipping escaped ones (`\{{#include …}}`).
fn includes(chapter: &str) -> Vec<Include> {
    let mut found = Vec::new();
    for (index, text) in chapter.lines().enumerate() {
        let mut rest = text;
        while let Some(start) = rest.find("{{#") {
            let escaped = rest[..start].ends_with('\\');
            rest = &rest[start + 3..];
            let Some(end) = rest.find("}}") else {
                break;
            };
            let link = &rest[..end];
            rest = &rest[end + 2..];
            if escaped {
                continue;
            }
            let mut words = link.trim().splitn(2, char::is_whitespace);
            let kind = words.next().unwrap_or_default();
            if kind != "include" && kind != "rustdoc_include" {
                continue;
            }
            let argument = words.next().unwrap_or_default().trim();
            let (path, selector) = match argument.split_once(':') {
                Some((path, selector)) => (path, Some(selector.to_owned())),
                None => (argument, None),
            };
            found.push(Include {
                line: index + 1,
                path: path.to_owned(),
                selector,
            });
        }
    }
    found
}

/// The 1-based first line a selector picks, if it is a line range
/// (`N`, `N:`, `N:M`, `:M`); `None` for a named anchor.
fn range_start(selector: &str) -> Option<Result<usize, String>> {
    let (start, end) = selector.split_once(':').unwrap_or((selector, ""));
    let numeric = |s: &str| s.is_empty() || s.bytes().all(|b| b.is_ascii_digit());
    if !numeric(start) || !numeric(end) {
        return None;
    }
    if start.is_empty() {
        return Some(Ok(1));
    }
    Some(
        start
            .parse()
            .map_err(|error| format!("bad line number {start}: {error}")),
    )
}

/// True if some line of `source` carries the marker `tag` (`ANCHOR` or
/// `ANCHOR_END`) for exactly `name`.
fn has_marker(source: &str, tag: &str, name: &str) -> bool {
    let marker = format!("{tag}:");
    source.lines().any(|line| {
        line.split_once(&marker)
            .and_then(|(_, after)| after.split_whitespace().next())
            .is_some_and(|found| found == name)
    })
}

/// The 1-based line where an insta snapshot's body starts: the line after the
/// header's closing `---`.
fn snapshot_body_start(snapshot: &str) -> Option<usize> {
    let mut lines = snapshot.lines();
    if lines.next()? != "---" {
        return None;
    }
    lines.position(|line| line == "---").map(|index| index + 3)
}

#[test]
fn every_include_points_at_a_file_and_anchor_that_exist() {
    let src = root().join("book/src");
    let mut problems = Vec::new();

    for chapter_name in names(&src).iter().filter(|name| name.ends_with(".md")) {
        let chapter_path = src.join(chapter_name);
        let chapter = match fs::read_to_string(&chapter_path) {
            Ok(chapter) => chapter,
            Err(error) => {
                problems.push(format!("book/src/{chapter_name}: {error}"));
                continue;
            }
        };

        for include in includes(&chapter) {
            let here = format!("book/src/{chapter_name}:{}", include.line);
            let target = src.join(&include.path);
            let source = match fs::read_to_string(&target) {
                Ok(source) => source,
                Err(error) => {
                    problems.push(format!(
                        "{here}: includes {} ({}), which cannot be read: {error}",
                        include.path,
                        from_root(&format!("book/src/{}", include.path)),
                    ));
                    continue;
                }
            };
            let line_count = source.lines().count();

            let start = match include.selector.as_deref().map(range_start) {
                // A named anchor.
                Some(None) => {
                    let anchor = include.selector.as_deref().unwrap_or_default();
                    for tag in ["ANCHOR", "ANCHOR_END"] {
                        if !has_marker(&source, tag, anchor) {
                            problems
                                .push(format!("{here}: {} has no `{tag}: {anchor}`", include.path));
                        }
                    }
                    None
                }
                Some(Some(Ok(start))) => {
                    if start == 0 || start > line_count {
                        problems.push(format!(
                            "{here}: {} starts at line {start}, but the file has {line_count} lines",
                            include.path
                        ));
                    }
                    Some(start)
                }
                Some(Some(Err(error))) => {
                    problems.push(format!("{here}: {}: {error}", include.path));
                    continue;
                }
                // The whole file.
                None => Some(1),
            };

            if include.path.ends_with(".snap") {
                match snapshot_body_start(&source) {
                    None => problems.push(format!(
                        "{here}: {} has no insta header (`---` … `---`)",
                        include.path
                    )),
                    Some(body) if start != Some(body) => problems.push(format!(
                        "{here}: {} must be included from line {body}, where its body starts \
                         (line {} is the header's closing `---`): write `{}:{body}:`",
                        include.path,
                        body - 1,
                        include.path
                    )),
                    Some(_) => {}
                }
            }
        }
    }

    report("book includes", &problems);
}

/// The numbers of the questions under a chapter's `### Think about it`
/// whose item has no `<details>` block (the answer a learner unfolds).
/// An item runs from its `N. ` line to the next item or heading.
fn unanswered_questions(chapter: &str) -> Vec<u32> {
    let Some((_, section)) = chapter.split_once("\n### Think about it\n") else {
        return Vec::new();
    };
    let section = section.split("\n#").next().unwrap_or_default();
    let mut unanswered = Vec::new();
    let mut item: Option<(u32, bool)> = None;
    for line in section.lines() {
        let number = line
            .split_once(". ")
            .and_then(|(n, _)| n.parse::<u32>().ok());
        if let Some(number) = number {
            if let Some((previous, false)) = item {
                unanswered.push(previous);
            }
            item = Some((number, false));
        } else if line.trim_start().starts_with("<details>")
            && let Some((_, answered)) = item.as_mut()
        {
            *answered = true;
        }
    }
    if let Some((last, false)) = item {
        unanswered.push(last);
    }
    unanswered
}

#[test]
fn every_question_to_think_about_has_its_answer() {
    let root = root();
    let mut problems = Vec::new();
    for name in names(&root.join("book/src")) {
        if lesson_number(&name).is_none() || !name.ends_with(".md") {
            continue;
        }
        let text = fs::read_to_string(root.join("book/src").join(&name)).unwrap_or_default();
        for number in unanswered_questions(&text) {
            problems.push(format!(
                "book/src/{name}: question {number} under `### Think about it` has no answer in a <details> block"
            ));
        }
    }
    report("questions to think about", &problems);
}

#[test]
fn the_checks_parse_what_they_should() {
    assert_eq!(lesson_number("08-rolling-restart"), Some("08"));
    assert_eq!(lesson_number("8-rolling-restart"), None);
    assert_eq!(lesson_number("README.md"), None);
    assert_eq!(
        from_root("book/src/../../lessons/./01-a/src/main.rs"),
        "lessons/01-a/src/main.rs"
    );

    let summary = "[Intro](introduction.md)\n- [01](01-a.md#top)\n- [07 Draft]()\n";
    assert_eq!(
        summary_links(summary),
        ["introduction.md", "01-a.md#top", ""]
    );

    let chapter = "x {{#include ../a.rs:here}} y\n\\{{#include skipped.rs}}\n\
                   {{#rustdoc_include b.rs:6:}}\n{{#include c.snap:6:}} {{#title T}}";
    assert_eq!(
        includes(chapter)
            .iter()
            .map(|i| (i.line, i.path.clone(), i.selector.clone()))
            .collect::<Vec<_>>(),
        [
            (1, "../a.rs".to_owned(), Some("here".to_owned())),
            (3, "b.rs".to_owned(), Some("6:".to_owned())),
            (4, "c.snap".to_owned(), Some("6:".to_owned())),
        ]
    );

    assert_eq!(range_start("here"), None);
    assert_eq!(range_start("6:"), Some(Ok(6)));
    assert_eq!(range_start("6"), Some(Ok(6)));
    assert_eq!(range_start(":9"), Some(Ok(1)));
    assert_eq!(range_start("2:9"), Some(Ok(2)));

    let source = "// ANCHOR: here2\n// ANCHOR: here\nfn f() {}\n// ANCHOR_END: here\n";
    assert!(has_marker(source, "ANCHOR", "here"));
    assert!(has_marker(source, "ANCHOR_END", "here"));
    assert!(!has_marker(source, "ANCHOR_END", "here2"));

    let chapter = "## Exercises\n\n### Think about it\n\n1. Why?\n   More.\n\n   <details>\n   \
                   <summary>An answer</summary>\n\n   Because.\n\n   </details>\n\n2. And this?\n\n\
                   3. Last.\n\n   <details>\n\n## Next\n\n4. Not a question here.\n";
    assert_eq!(unanswered_questions(chapter), [2]);
    assert_eq!(unanswered_questions("1. No section.\n"), Vec::<u32>::new());

    let snapshot = "---\nsource: a.rs\nexpression: t\ninput_file: x.toml\n---\nbody\n";
    assert_eq!(snapshot_body_start(snapshot), Some(6));
    assert_eq!(snapshot_body_start("body only\n"), None);
}
