//! The supervisor's state file, `<run dir>/stack.json`: which supervisor runs the stack and each
//! process's pid, port, restarts and start time. `lab up` rewrites it (atomically) whenever
//! something changes; `lab status` and `lab down`, run from another shell, read it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// The supervisor's pid.
    pub supervisor: u32,
    /// `starting`, `up`, `stopping` or `stopped`.
    pub phase: String,
    /// Every process of the plan, in start order.
    pub procs: Vec<ProcState>,
}

/// One process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcState {
    /// Its name.
    pub name: String,
    /// Its pid (= process group id) while it runs.
    pub pid: Option<u32>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Restarts after a death.
    pub restarts: u32,
    /// When it was started (wall-clock ms) while it runs.
    pub started_unix_ms: Option<u64>,
    /// The last restart delay, ms.
    pub last_backoff_ms: Option<u64>,
    /// How it last exited.
    pub last_exit: Option<String>,
    /// Its readiness path (`None`: TCP).
    pub ready_path: Option<String>,
    /// Its SIGTERM → SIGKILL grace, ms (for `lab down` when the supervisor is gone).
    pub stop_grace_ms: u64,
    /// The program it runs: a recorded pid is signalled only while it still runs this (a pid
    /// reused by another program, e.g. after a reboot, is left alone).
    #[serde(default)]
    pub program: String,
}

impl ProcState {
    /// Its pid, if that process still runs its program (so its group is still ours).
    pub fn live_pid(&self) -> Option<u32> {
        self.pid.filter(|&pid| runs(pid, &self.program))
    }
}

/// True if process `pid` exists and runs `program`: the file its executable link names (not its
/// command line, which Redis and nginx rewrite), against `program` found on `PATH` and with its
/// symbolic links resolved (Debian's `redis-server` is a link); a binary rebuilt since it started
/// shows as `… (deleted)`.
pub fn runs(pid: u32, program: &str) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else { return false };
    let exe = exe.to_string_lossy();
    let exe = Path::new(exe.trim_end_matches(" (deleted)"));
    resolve(program).is_some_and(|p| p == exe)
}

/// `program`'s file: as given if it names a path, else the first on `PATH`; links resolved.
fn resolve(program: &str) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        return std::fs::canonicalize(program).ok();
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
}

/// `<dir>/stack.json`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("stack.json")
}

impl State {
    /// Writes it atomically (a reader never sees half a file).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("stack.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path(dir))
    }

    /// Reads it, if there is one.
    pub fn read(dir: &Path) -> Option<State> {
        let text = std::fs::read(path(dir)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_counts_only_while_it_runs_its_program() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap().display().to_string();
        assert!(runs(me, &exe));
        assert!(!runs(me, "/usr/sbin/nginx"), "another program");
        assert!(!runs(me, ""));
        assert!(!runs(u32::MAX - 1, &exe), "no such process");
        assert_eq!(resolve("sh"), std::fs::canonicalize("/bin/sh").ok(), "found on PATH, links resolved");
    }
}
