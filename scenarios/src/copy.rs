//! A private copy of the workspace, for trying a patch without touching the
//! working tree: how the exercises' CI test proves that a reference
//! solution passes.
//!
//! The copy lives at one fixed place, `<target>/exercises/workspace`, with
//! its own target folder beside it, and is brought up to date file by file:
//! a file whose content has not changed keeps its timestamp, so cargo
//! rebuilds only the crate a patch touched, and the dependencies compile
//! once for every exercise and every run (a fresh temporary folder per
//! exercise would rebuild the supervisor and its dependencies each time:
//! cargo keys a path crate's artifacts by its path). A file that a patch
//! changed gets its shipped content back, with a new timestamp, before the
//! next patch. A lock file keeps two test runs from sharing the copy at once.
//!
//! What is copied is what git would commit: tracked files and untracked
//! files that are not ignored, as they are in the working tree now, so a
//! change not yet committed is tried too.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

/// Why the copy could not be made, patched or built.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot lock {path} (is another test run using the copy?): {errno}")]
    Lock { path: PathBuf, errno: nix::Error },
    #[error("`{command}` failed in {dir}:\n{output}")]
    Command {
        command: String,
        dir: PathBuf,
        output: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CopyError {
    let what = what.into();
    move |source| CopyError::Io { what, source }
}

/// The workspace's copy, locked for as long as this value lives.
#[derive(Debug)]
pub struct WorkspaceCopy {
    /// The copy's top folder.
    dir: PathBuf,
    /// Its target folder, kept outside the copy so syncing never walks it.
    target: PathBuf,
    _lock: Flock<File>,
}

impl WorkspaceCopy {
    /// Brings the copy of `root` up to date and locks it, in the target
    /// folder (`$CARGO_TARGET_DIR/exercises` or `<root>/target/exercises`).
    pub fn of(root: &Path) -> Result<WorkspaceCopy, CopyError> {
        let base = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir).join("exercises"),
            None => root.join("target/exercises"),
        };
        WorkspaceCopy::at(root, &base)
    }

    /// The same, with the copy and its target folder under `base`.
    pub fn at(root: &Path, base: &Path) -> Result<WorkspaceCopy, CopyError> {
        let dir = base.join("workspace");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let lock_path = base.join("lock");
        let lock_file =
            File::create(&lock_path).map_err(io(format!("creating {}", lock_path.display())))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            CopyError::Lock {
                path: lock_path.clone(),
                errno,
            }
        })?;
        let copy = WorkspaceCopy {
            dir,
            target: base.join("target"),
            _lock: lock,
        };
        copy.sync(root)?;
        Ok(copy)
    }

    /// The copy's top folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sync(&self, root: &Path) -> Result<(), CopyError> {
        let listed = run(
            Command::new("git")
                .args([
                    "ls-files",
                    "-z",
                    "--cached",
                    "--others",
                    "--exclude-standard",
                ])
                .current_dir(root),
            root,
        )?;
        let files: BTreeSet<PathBuf> = listed
            .split('\0')
            .filter(|name| !name.is_empty())
            .map(PathBuf::from)
            // A tracked file deleted in the working tree is not copied,
            // and nothing under target/ is, whatever .gitignore says: the
            // copy itself lives there.
            .filter(|name| !name.starts_with("target") && root.join(name).is_file())
            .collect();
        for name in &files {
            let from = root.join(name);
            let to = self.dir.join(name);
            let content =
                std::fs::read(&from).map_err(io(format!("reading {}", from.display())))?;
            if std::fs::read(&to).ok().as_deref() == Some(content.as_slice()) {
                continue;
            }
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("creating {}", parent.display())))?;
            }
            std::fs::write(&to, &content).map_err(io(format!("writing {}", to.display())))?;
        }
        // What a patch added, or what the working tree no longer has.
        for stale in walk(&self.dir)? {
            let name = stale.strip_prefix(&self.dir).unwrap_or(&stale);
            if !files.contains(name) {
                std::fs::remove_file(&stale)
                    .map_err(io(format!("removing {}", stale.display())))?;
            }
        }
        Ok(())
    }

    /// Applies `patch` to the copy (never to the working tree: git is kept
    /// from finding the repository that holds the copy).
    pub fn apply(&self, patch: &Path) -> Result<(), CopyError> {
        let ceiling = self.dir.parent().unwrap_or(&self.dir);
        run(
            Command::new("git")
                .arg("apply")
                .arg(patch)
                .env("GIT_CEILING_DIRECTORIES", ceiling)
                .env_remove("GIT_DIR")
                .env_remove("GIT_WORK_TREE")
                .current_dir(&self.dir),
            &self.dir,
        )?;
        Ok(())
    }

    /// Builds `bin` (a binary of the package of the same name) in the copy
    /// and returns its path.
    pub fn build(&self, bin: &str) -> Result<PathBuf, CopyError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run(
            Command::new(cargo)
                .args(["build", "--quiet", "--locked", "-p", bin, "--bin", bin])
                .env("CARGO_TARGET_DIR", &self.target)
                .current_dir(&self.dir),
            &self.dir,
        )?;
        Ok(self.target.join("debug").join(bin))
    }
}

/// Runs `command`, returning its stdout, or its whole output as the error.
fn run(command: &mut Command, dir: &Path) -> Result<String, CopyError> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .map_err(io(format!("running {shown} in {}", dir.display())))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(CopyError::Command {
        command: shown,
        dir: dir.to_owned(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Result<Vec<PathBuf>, CopyError> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        let entries =
            std::fs::read_dir(&folder).map_err(io(format!("reading {}", folder.display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("reading {}", folder.display())))?;
            let kind = entry
                .file_type()
                .map_err(io(format!("reading {}", entry.path().display())))?;
            if kind.is_dir() {
                folders.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap_or_else(|error| panic!("cannot run git: {error}"));
        assert!(status.success(), "git {args:?} failed in {}", dir.display());
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    /// The copy sits inside the repository, as it does in the workbook
    /// (`target/exercises/workspace`): a patch must change the copy and
    /// never the working tree, and the next copy must have the working
    /// tree's content again, a file the patch added gone.
    #[test]
    fn a_patch_changes_the_copy_only_and_the_next_copy_undoes_it() -> Result<(), CopyError> {
        let root = tempfile::tempdir().map_err(io("a temporary folder"))?;
        let root = root.path();
        git(root, &["init", "-q"]);
        std::fs::write(root.join(".gitignore"), "target/\n").map_err(io(".gitignore"))?;
        std::fs::create_dir_all(root.join("src")).map_err(io("src"))?;
        std::fs::write(root.join("src/a.txt"), "one\n").map_err(io("a.txt"))?;
        git(root, &["add", "."]);
        let patch = root.join("target/change.patch");
        std::fs::create_dir_all(root.join("target")).map_err(io("target"))?;
        std::fs::write(
            &patch,
            "--- a/src/a.txt\n+++ b/src/a.txt\n@@ -1 +1 @@\n-one\n+two\n\
             --- /dev/null\n+++ b/src/new.txt\n@@ -0,0 +1 @@\n+new\n",
        )
        .map_err(io("the patch"))?;
        let base = root.join("target/exercises");

        let copy = WorkspaceCopy::at(root, &base)?;
        assert_eq!(read(&copy.dir().join("src/a.txt")), "one\n");
        copy.apply(&patch)?;
        assert_eq!(read(&copy.dir().join("src/a.txt")), "two\n");
        assert!(copy.dir().join("src/new.txt").is_file());
        assert_eq!(
            read(&root.join("src/a.txt")),
            "one\n",
            "the working tree was patched"
        );
        assert!(
            !root.join("src/new.txt").exists(),
            "the working tree was patched"
        );
        assert!(
            !copy.dir().join("target").exists(),
            "the copy holds target/"
        );
        drop(copy);

        let again = WorkspaceCopy::at(root, &base)?;
        assert_eq!(read(&again.dir().join("src/a.txt")), "one\n");
        assert!(!again.dir().join("src/new.txt").exists());
        Ok(())
    }
}
