//! Runs a [`Plan`]: starts its processes in dependency order (each as soon as what it depends on
//! is ready, so independent ones start together), waits for readiness with progress, restarts a
//! process that dies with capped exponential backoff, and stops everything front to back.
//!
//! Each process runs in its own process group (`CommandExt::process_group(0)`), and every signal
//! goes to the whole group, so nginx's workers and any other children go with their parent; a
//! group is signalled again with SIGKILL after its leader exits, so nothing is left behind. A
//! stop is SIGTERM, then SIGKILL after the process's grace period. If start-up fails half-way or
//! is interrupted, what was started is stopped before the error is returned; dropping the
//! supervisor stops everything too.
//!
//! The supervisor is synchronous: [`Supervisor::tick`] reaps and restarts, and its owner calls it
//! in a loop (`lab up` every 100 ms; a test whenever it likes).

use std::fs::OpenOptions;
use std::io::Write;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

use crate::plan::{Kind, Plan, Proc};
use crate::probe;
use crate::state::{ProcState, State};

/// What a failed start says when one of the plan's ports already answers: callers that chose the
/// ports themselves (the tests' free ports) may plan again.
pub const PORT_TAKEN: &str = "is taken by something this stack did not start";

/// When and how often a process that died is started again.
#[derive(Clone, Copy, Debug)]
pub struct Restart {
    /// The first delay; each next one doubles.
    pub first: Duration,
    /// The cap.
    pub max: Duration,
    /// A process that ran this long before dying starts the sequence again from `first`.
    pub stable: Duration,
}

impl Default for Restart {
    /// 0.5 s, 1 s, 2 s, … capped at 30 s; reset after a minute of running.
    fn default() -> Restart {
        Restart {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable: Duration::from_secs(60),
        }
    }
}

impl Restart {
    fn delays(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times()
            .build()
    }
}

/// One process's runtime state.
#[derive(Default)]
struct Slot {
    /// The running child (its pid is its process group id).
    child: Option<Child>,
    /// When it was last started.
    started: Option<Instant>,
    /// The same, as wall-clock milliseconds, for the state file.
    started_unix_ms: Option<u64>,
    /// Restarts after a death (not counting the first start or a deliberate start).
    restarts: u32,
    /// The delays still to come in the current restart sequence.
    delays: Option<ExponentialBackoff>,
    /// When the pending restart is due.
    restart_at: Option<Instant>,
    /// The last restart delay.
    last_backoff: Option<Duration>,
    /// How it last exited.
    last_exit: Option<String>,
}

/// Runs a plan's processes. See the module doc.
pub struct Supervisor {
    plan: Plan,
    slots: Vec<Slot>,
    restart: Option<Restart>,
    /// Where progress lines go (`lab up`: the terminal; tests: nowhere).
    say: Box<dyn FnMut(&str) + Send>,
    /// Write the state file (`lab up`) on every change, in this phase.
    persist: Option<&'static str>,
}

impl Supervisor {
    /// A supervisor for `plan`; `restart: None` leaves a dead process down.
    pub fn new(plan: Plan, restart: Option<Restart>) -> Supervisor {
        let slots = plan.procs.iter().map(|_| Slot::default()).collect();
        Supervisor { plan, slots, restart, say: Box::new(|_| {}), persist: None }
    }

    /// Prints progress with `say`.
    pub fn with_output(mut self, say: impl FnMut(&str) + Send + 'static) -> Supervisor {
        self.say = Box::new(say);
        self
    }

    /// Keeps the state file (`<run dir>/stack.json`) current from now on, in `phase`.
    pub fn persist(&mut self, phase: &'static str) {
        self.persist = Some(phase);
        self.changed();
    }

    /// Something changed: write the state file if asked to.
    fn changed(&mut self) {
        if let Some(phase) = self.persist {
            if let Err(e) = self.state(phase).write(&self.plan.dir) {
                (self.say)(&format!("  could not write the state file: {e}"));
            }
        }
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.plan
            .procs
            .iter()
            .position(|p| p.name == name)
            .with_context(|| format!("no process {name:?} (the stack has: {})", self.plan.names()))
    }

    /// Starts every process in dependency order and waits until all are ready. `cancel` (set by
    /// SIGINT/SIGTERM) interrupts it. On any failure, what was started is stopped first.
    pub fn start_all(&mut self, cancel: &AtomicBool) -> anyhow::Result<()> {
        let result = self.try_start_all(cancel);
        if result.is_err() {
            self.stop_all();
        }
        result
    }

    fn try_start_all(&mut self, cancel: &AtomicBool) -> anyhow::Result<()> {
        self.plan.prepare()?;
        for p in &self.plan.procs {
            if probe::port_open(p.port) {
                bail!("port {} {PORT_TAKEN} (for {}); stop it or free the port", p.port, p.name);
            }
        }
        let kafka_users = self.plan.procs.iter().any(|p| matches!(p.kind, Kind::Matcher | Kind::OrderSvc));
        if kafka_users && !self.plan.procs.iter().any(|p| p.kind == Kind::Broker) {
            crate::topics::create(&self.plan.kafka, &crate::plan::TOPICS, Duration::from_secs(30))?;
        }
        let n = self.plan.procs.len();
        let mut ready = vec![false; n];
        let mut since: Vec<Option<Instant>> = vec![None; n];
        let mut told = vec![Instant::now(); n];
        while ready.iter().any(|r| !r) {
            if cancel.load(Ordering::SeqCst) {
                bail!("interrupted while starting");
            }
            for i in 0..n {
                let p = &self.plan.procs[i];
                let deps_ready = p
                    .deps
                    .iter()
                    .all(|d| self.plan.procs.iter().zip(&ready).any(|(q, r)| &q.name == d && *r));
                if since[i].is_none() && deps_ready {
                    self.spawn(i)?;
                    since[i] = Some(Instant::now());
                    told[i] = Instant::now();
                }
            }
            for i in 0..n {
                let Some(t0) = since[i] else { continue };
                if ready[i] {
                    continue;
                }
                let p = self.plan.procs[i].clone();
                if let Some(exit) = self.reap(i) {
                    bail!(
                        "{} exited while starting ({exit}); its log ends:\n{}",
                        p.name,
                        self.tail(&p.name, 20)
                    );
                }
                if probe::passes(&p.ready, p.port) {
                    if p.kind == Kind::Broker {
                        crate::topics::create(
                            &self.plan.kafka,
                            &crate::plan::TOPICS,
                            Duration::from_secs(30),
                        )?;
                    }
                    ready[i] = true;
                    (self.say)(&format!(
                        "  {:<12} ready on {} ({:.1} s)",
                        p.name,
                        p.address(),
                        t0.elapsed().as_secs_f64()
                    ));
                } else if t0.elapsed() > p.ready_timeout {
                    bail!(
                        "{} did not become ready in {:?}; its log ends:\n{}",
                        p.name,
                        p.ready_timeout,
                        self.tail(&p.name, 20)
                    );
                } else if told[i].elapsed() > Duration::from_secs(10) {
                    told[i] = Instant::now();
                    let why =
                        probe::waiting_for(&p.ready, p.port).map(|w| format!(": {w}")).unwrap_or_default();
                    (self.say)(&format!("  {:<12} not ready yet{why}", p.name));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts process `i`, in its own process group, output appended to its log.
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let p = &self.plan.procs[i];
        let log_path = self.plan.dir.join(format!("{}.log", p.name));
        let mut log = OpenOptions::new().create(true).append(true).open(&log_path)?;
        writeln!(log, "[lab {}] starting: {}", utc_now(), p.command_line())?;
        let child = Command::new(&p.program)
            .args(&p.args)
            .envs(p.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.plan.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} ({})", p.name, p.program.display()))?;
        let slot = &mut self.slots[i];
        slot.child = Some(child);
        slot.started = Some(Instant::now());
        slot.started_unix_ms = Some(unix_ms());
        slot.restart_at = None;
        self.changed();
        Ok(())
    }

    /// If process `i` has exited: reaps it, clears up its group, and says how it exited.
    fn reap(&mut self, i: usize) -> Option<String> {
        let child = self.slots[i].child.as_mut()?;
        if !exited_unreaped(child.id()) {
            return None;
        }
        // The leader is a zombie until it is waited for, so its pid — the group's id — cannot
        // have been reused: the group is still this process's own. Clear it up, then reap.
        kill_group(child.id(), Signal::SIGKILL);
        let exit = child.wait().map_or_else(|e| format!("lost: {e}"), describe);
        self.slots[i].child = None;
        self.note(i, &format!("exited ({exit})"));
        self.slots[i].last_exit = Some(exit.clone());
        self.changed();
        Some(exit)
    }

    /// Appends a supervisor line to process `i`'s log.
    fn note(&self, i: usize, what: &str) {
        let path = self.plan.dir.join(format!("{}.log", self.plan.procs[i].name));
        if let Ok(mut log) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(log, "[lab {}] {} {what}", utc_now(), self.plan.procs[i].name);
        }
    }

    /// Reaps processes that died and restarts them when their backoff is due (if restarts are on).
    pub fn tick(&mut self) {
        for i in 0..self.slots.len() {
            if let Some(exit) = self.reap(i) {
                self.after_exit(i, &exit);
            }
            if self.slots[i].restart_at.is_some_and(|t| Instant::now() >= t) {
                self.slots[i].restarts += 1;
                if let Err(e) = self.spawn(i) {
                    (self.say)(&format!("  {e:#}"));
                    let delay = self.restart.map_or(Duration::from_secs(1), |r| r.max);
                    self.slots[i].restart_at = Some(Instant::now() + delay);
                }
            }
        }
    }

    /// Process `i` died: schedules its restart after the next delay (if restarts are on).
    fn after_exit(&mut self, i: usize, exit: &str) {
        let name = self.plan.procs[i].name.clone();
        let Some(policy) = self.restart else {
            (self.say)(&format!("  {name} exited ({exit}); not restarted (--no-restart)"));
            return;
        };
        let slot = &mut self.slots[i];
        let ran = slot.started.map_or(Duration::ZERO, |t| t.elapsed());
        if ran >= policy.stable || slot.delays.is_none() {
            slot.delays = Some(policy.delays());
        }
        let delay = slot.delays.as_mut().and_then(Iterator::next).unwrap_or(policy.max);
        slot.restart_at = Some(Instant::now() + delay);
        slot.last_backoff = Some(delay);
        let line = format!(
            "{name} exited ({exit}) after {:.1} s; restarting in {:.1} s (restart {})",
            ran.as_secs_f64(),
            delay.as_secs_f64(),
            slot.restarts + 1
        );
        self.note(i, &format!("restarting in {:.1} s", delay.as_secs_f64()));
        (self.say)(&format!("  {line}"));
    }

    /// Stops every process front to back (each is gone before what it depends on stops: the
    /// matcher drains into Redis and the broker, so those stop after it).
    pub fn stop_all(&mut self) {
        for i in (0..self.slots.len()).rev() {
            self.slots[i].restart_at = None;
            if self.slots[i].child.is_none() {
                continue;
            }
            let grace = self.plan.procs[i].stop_grace;
            let name = self.plan.procs[i].name.clone();
            match self.stop_index(i, grace) {
                Some(_) => (self.say)(&format!("  {name:<12} stopped")),
                None => {
                    (self.say)(&format!("  {name:<12} killed (it did not stop within {} s)", grace.as_secs()))
                }
            }
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace`: how it exited, or `None` if it was killed.
    fn stop_index(&mut self, i: usize, grace: Duration) -> Option<ExitStatus> {
        self.slots[i].restart_at = None;
        let child = self.slots[i].child.as_mut()?;
        let pid = child.id();
        kill_group(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while !exited_unreaped(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let in_time = exited_unreaped(pid);
        // Still unreaped here, so the group id is still this process's (see `reap`).
        kill_group(pid, Signal::SIGKILL);
        let status = child.wait().ok().filter(|_| in_time);
        self.slots[i].child = None;
        self.slots[i].last_exit = Some(status.map_or("killed".to_owned(), describe));
        self.note(i, &format!("stopped ({})", self.slots[i].last_exit.clone().unwrap_or_default()));
        self.changed();
        status
    }

    /// Stops one process (SIGTERM, SIGKILL after `grace`); it is not restarted. How it exited,
    /// or `None` if it had to be killed or was not running.
    pub fn terminate(&mut self, name: &str, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let i = self.index(name)?;
        Ok(self.stop_index(i, grace))
    }

    /// SIGKILLs one process's group, as a crash would; reaped at once. With restarts on, the next
    /// [`tick`](Supervisor::tick) schedules its restart.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        if let Some(child) = &self.slots[i].child {
            kill_group(child.id(), Signal::SIGKILL);
            loop {
                if let Some(exit) = self.reap(i) {
                    self.after_exit(i, &exit);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// Sends `signal` to one process's group (`SIGSTOP`, `SIGCONT`, …).
    pub fn signal(&self, name: &str, signal: Signal) -> anyhow::Result<()> {
        let i = self.index(name)?;
        if let Some(child) = &self.slots[i].child {
            kill_group(child.id(), signal);
        }
        Ok(())
    }

    /// Starts one process again (after a kill or a terminate) and waits until it is alive.
    pub fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        if self.slots[i].child.is_some() {
            self.reap(i);
        }
        anyhow::ensure!(self.slots[i].child.is_none(), "{name} is running");
        self.spawn(i)?;
        let p = self.plan.procs[i].clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !probe::passes(&p.live, p.port) {
            if let Some(exit) = self.reap(i) {
                bail!("{name} exited while starting ({exit}):\n{}", self.tail(name, 20));
            }
            if Instant::now() > deadline {
                bail!("{name} not alive after 30 s:\n{}", self.tail(name, 20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// True while the process runs.
    pub fn running(&mut self, name: &str) -> bool {
        let Ok(i) = self.index(name) else { return false };
        self.reap(i);
        self.slots[i].child.is_some()
    }

    /// Its pid (= its process group id) while it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let i = self.index(name).ok()?;
        self.slots[i].child.as_ref().map(Child::id)
    }

    /// The last lines of a process's log.
    pub fn tail(&self, name: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.plan.dir.join(format!("{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// What runs, for the state file and `lab status`.
    pub fn state(&self, phase: &str) -> State {
        let procs = self
            .plan
            .procs
            .iter()
            .zip(&self.slots)
            .map(|(p, s)| ProcState {
                name: p.name.clone(),
                pid: s.child.as_ref().map(Child::id),
                port: p.port,
                restarts: s.restarts,
                started_unix_ms: s.child.as_ref().and(s.started_unix_ms),
                last_backoff_ms: s.last_backoff.map(|d| d.as_millis() as u64),
                last_exit: s.last_exit.clone(),
                ready_path: match &p.ready {
                    crate::plan::Probe::Http(path) => Some(path.clone()),
                    crate::plan::Probe::Tcp => None,
                },
                stop_grace_ms: p.stop_grace.as_millis() as u64,
                program: p.program.display().to_string(),
            })
            .collect();
        State { supervisor: std::process::id(), phase: phase.to_owned(), procs }
    }

    /// The process description by name.
    pub fn proc(&self, name: &str) -> Option<&Proc> {
        self.plan.get(name)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Sends `signal` to process group `pgid`; a group that is gone already is fine.
pub fn kill_group(pgid: u32, signal: Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// True once child `pid` has exited, without reaping it (`waitid` with `WNOWAIT`).
fn exited_unreaped(pid: u32) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let Ok(raw) = i32::try_from(pid) else { return true };
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(Pid::from_raw(raw)), flags) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(_) => true, // not our child any more: nothing to wait for
    }
}

/// True while any process of group `pgid` exists (zombies included).
pub fn group_alive(pgid: u32) -> bool {
    i32::try_from(pgid).is_ok_and(|g| killpg(Pid::from_raw(g), None).is_ok())
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(sig)) => Signal::try_from(sig).map_or(format!("signal {sig}"), |s| format!("{s}")),
        _ => status.to_string(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (UTC), for log lines.
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let r = Restart {
            first: Duration::from_millis(100),
            max: Duration::from_millis(500),
            stable: Duration::ZERO,
        };
        let d: Vec<u128> = r.delays().take(5).map(|d| d.as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn dates_are_civil() {
        let now = utc_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
