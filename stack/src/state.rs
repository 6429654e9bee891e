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
