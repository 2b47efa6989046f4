//! Node itself, for the Node twins: found, checked and made ready.
//!
//! Every sentence the book says about Node is backed by a scenario that runs
//! Node, not a Rust imitation of it. A twin is a small Node program in
//! `lessons/NN-*/node/`, driven by the same scripts, flags and load as its
//! Rust lesson. This module finds `node` on the `PATH` (version 20 or later:
//! the behaviour the book describes is Node 20's), and installs the twins'
//! two npm packages (`ioredis`, `ws`) from the committed lock file the first
//! time a twin needs them, so that `cargo test` works on a fresh clone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The oldest Node whose behaviour the twins' scenarios describe.
pub const MIN_MAJOR: u32 = 20;

/// The shared twin module and its packages, from the workspace's top.
pub const TWIN_DIR: &str = "shared/node-twin";

/// Why a twin cannot run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error(
        "the Node twins need Node.js {MIN_MAJOR} or later, and there is no `node` on the PATH: install it (Debian/Ubuntu: `apt-get install nodejs`, or from nodejs.org)"
    )]
    Missing,
    #[error(
        "the Node twins need Node.js {MIN_MAJOR} or later; `node --version` says {0}: install a newer one"
    )]
    TooOld(String),
    #[error("no Node twin {0}: the script's `node` names a file in the lesson's node/ folder")]
    NoTwin(String),
    #[error("`npm ci --prefix {TWIN_DIR}` failed ({status}); its last words: {said}")]
    Npm { status: String, said: String },
    #[error("cannot run npm to install the twins' packages: {0}")]
    NoNpm(String),
}

/// The `node` program to run, checked once per process.
pub fn node() -> Result<PathBuf, NodeError> {
    static FOUND: OnceLock<Result<PathBuf, NodeError>> = OnceLock::new();
    FOUND.get_or_init(find_node).clone()
}

fn find_node() -> Result<PathBuf, NodeError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let node = std::env::split_paths(&path)
        .map(|dir| dir.join("node"))
        .find(|candidate| candidate.is_file())
        .ok_or(NodeError::Missing)?;
    let output = Command::new(&node)
        .arg("--version")
        .output()
        .map_err(|_| NodeError::Missing)?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    match major(&version) {
        Some(major) if major >= MIN_MAJOR => {}
        _ => return Err(NodeError::TooOld(version)),
    }
    // The executable the kernel reports for its processes (`/proc/PID/exe`),
    // so that the runner can tell its node processes from anyone else's.
    Ok(std::fs::canonicalize(&node).unwrap_or(node))
}

/// `v20.20.2` → 20.
fn major(version: &str) -> Option<u32> {
    version.strip_prefix('v')?.split('.').next()?.parse().ok()
}

/// The twin `file` of lesson `nn` (`"08"`, `"usual.js"`), if it exists.
pub fn twin(root: &Path, nn: &str, file: &str) -> Result<PathBuf, NodeError> {
    let missing = || NodeError::NoTwin(format!("lessons/{nn}-*/node/{file}"));
    let lessons = std::fs::read_dir(root.join("lessons")).map_err(|_| missing())?;
    lessons
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|dir| {
            dir.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&format!("{nn}-")))
        })
        .map(|dir| dir.join("node").join(file))
        .find(|path| path.is_file())
        .ok_or_else(missing)
}

/// Installs the twins' npm packages from `package-lock.json` unless they
/// are there already. Several test processes may ask at once: a lock file
/// lets one install while the others wait, then find the work done.
pub fn ensure_packages(root: &Path) -> Result<(), NodeError> {
    let dir = root.join(TWIN_DIR);
    let installed = || dir.join("node_modules/.package-lock.json").is_file();
    if installed() {
        return Ok(());
    }
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("node_modules.lock"))
        .map_err(|error| NodeError::NoNpm(error.to_string()))?;
    let _held = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| NodeError::NoNpm(errno.to_string()))?;
    if installed() {
        return Ok(());
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .output()
        .map_err(|error| NodeError::NoNpm(error.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        let said = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = said.lines().rev().take(5).collect();
        Err(NodeError::Npm {
            status: output.status.to_string(),
            said: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_by_their_major_number() {
        assert_eq!(major("v20.20.2"), Some(20));
        assert_eq!(major("v18.0.0"), Some(18));
        assert_eq!(major("20.1.0"), None);
        assert_eq!(major(""), None);
    }
}
