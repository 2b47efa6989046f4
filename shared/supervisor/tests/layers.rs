//! The layering `lib.rs` promises, checked: every module's `crate::` uses
//! point to its own layer or below.
//!
//! The crate is read as text, a line at a time, skipping comments: what a
//! doc comment links to is not a dependency. A module this table does not
//! know fails the test, so a new module has to be given its place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module's layer, as `lib.rs` lists them. `lib` (the crate
/// root, with its re-exports and `default_workers`) is below everything
/// that uses those; it is not checked itself.
const LAYERS: &[(&str, u8)] = &[
    ("role", 1),
    ("ipc", 1),
    ("inherit", 1),
    ("handles", 1),
    ("restart", 1),
    ("spread", 1),
    ("listen", 2),
    ("accept", 2),
    ("sticky", 2),
    ("peer", 2),
    ("event", 3),
    ("worker_env", 3),
    ("report", 4),
    ("http", 4),
    ("runtime", 5),
    ("worker", 5),
    ("cluster", 6),
    ("cli", 7),
];

/// What the crate root offers under its own name, and the layer it lives
/// in: `crate::exit_code` is `report`'s, `crate::default_workers` needs
/// nothing.
const ROOT_ITEMS: &[(&str, u8)] = &[("exit_code", 4), ("default_workers", 1)];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|entry| entry.path()) {
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The names after `crate::` on a line of code.
fn uses(line: &str) -> impl Iterator<Item = &str> {
    line.match_indices("crate::").map(move |(at, _)| {
        let rest = &line[at + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    })
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().chain(ROOT_ITEMS).copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "read {} files under {}",
        files.len(),
        src.display()
    );

    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap_or(file);
        let first = relative
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy());
        let module = first
            .as_deref()
            .unwrap_or("")
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" {
            continue;
        }
        let Some(&own) = layers.get(module.as_str()) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer in LAYERS",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in uses(line) {
                match layers.get(used) {
                    Some(&theirs) if theirs > own && used != module => wrong.push(format!(
                        "{}:{}: `{module}` (layer {own}) uses `{used}` (layer {theirs})",
                        relative.display(),
                        number + 1
                    )),
                    Some(_) => {}
                    None => wrong.push(format!(
                        "{}:{}: `crate::{used}` is in no layer",
                        relative.display(),
                        number + 1
                    )),
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
