//! `lab cpu`: how much CPU each process of a running stack uses over a few seconds, from the
//! kernel's own accounting (`/proc/<pid>/stat`: user and system time, every thread), each process
//! counted with its children (nginx's workers), and the total — the figure issue 10's "a stack at
//! rest uses at most 5 % of one core" is about. Linux only, like the stack.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One process's share of one core over the measured span.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Usage {
    /// The stack's name for it (`lab` for the supervisor).
    pub process: String,
    /// Its pid.
    pub pid: u32,
    /// Percent of one core, itself and its children.
    pub cpu_percent: f64,
}

/// What `/proc/<pid>/stat` says that matters here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The parent's pid.
    pub ppid: u32,
    /// User plus system time, in clock ticks.
    pub ticks: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so the fields are counted from the last `)`. `None` if the line
/// is not one.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    // After the name: state (3), ppid (4), …, utime (14), stime (15).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat { ppid: u32::try_from(field(4)?).ok()?, ticks: field(14)? + field(15)? })
}

/// Every process's stat now (processes that end while being read are skipped).
fn snapshot() -> HashMap<u32, Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return HashMap::new() };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some((pid, parse_stat(&line)?))
    })
    .collect()
}

/// Each process's children in `stats`.
pub fn children(stats: &HashMap<u32, Stat>) -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, s) in stats {
        children.entry(s.ppid).or_default().push(pid);
    }
    children
}

/// `root` and every process below it (`children`: [`children`]), except what is below another of
/// `roots` (the supervisor's children are the stack's processes, each measured on its own).
pub fn tree(root: u32, children: &HashMap<u32, Vec<u32>>, roots: &[u32]) -> Vec<u32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        all.extend(children.get(&all[i]).into_iter().flatten().copied().filter(|c| !roots.contains(c)));
        i += 1;
    }
    all
}

/// Ticks of `pids` in `stats` (a pid missing from it counts nothing).
fn ticks(pids: &[u32], stats: &HashMap<u32, Stat>) -> u64 {
    pids.iter().filter_map(|p| stats.get(p)).map(|s| s.ticks).sum()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`; Linux's is 100).
pub fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// Measures `procs` (name, pid) over `span`. A process's children are those it has at the start
/// and at the end; a process that ends meanwhile counts up to its last reading.
pub fn measure(procs: &[(String, u32)], span: Duration) -> Vec<Usage> {
    let before = snapshot();
    let started = Instant::now();
    std::thread::sleep(span);
    let after = snapshot();
    let seconds = started.elapsed().as_secs_f64();
    let hz = ticks_per_second();
    let roots: Vec<u32> = procs.iter().map(|p| p.1).collect();
    let (below_before, below_after) = (children(&before), children(&after));
    procs
        .iter()
        .map(|(name, pid)| {
            let mut pids = tree(*pid, &below_before, &roots);
            pids.extend(tree(*pid, &below_after, &roots));
            pids.sort_unstable();
            pids.dedup();
            // A process seen only at the start counts nothing more; one seen only at the end
            // counts from zero (it started meanwhile).
            let used = pids
                .iter()
                .map(|p| {
                    let end = after.get(p).or(before.get(p)).map_or(0, |s| s.ticks);
                    end.saturating_sub(ticks(&[*p], &before))
                })
                .sum::<u64>();
            Usage { process: name.clone(), pid: *pid, cpu_percent: 100.0 * used as f64 / hz / seconds }
        })
        .collect()
}

/// `lab cpu`: measures every running process of the stack in `dir` (and the supervisor) over
/// `seconds` and prints a table, or JSON (`{"seconds", "processes": [...], "total_percent"}`).
pub fn cpu(dir: &Path, seconds: f64, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0,
        "--seconds must be more than 0 and at most 3600 (got {seconds})"
    );
    let state = crate::state::State::read(dir)
        .ok_or_else(|| anyhow::anyhow!("no stack runs from {} (./lab up starts one)", dir.display()))?;
    let mut procs: Vec<(String, u32)> = vec![("lab".to_owned(), state.supervisor)];
    procs.extend(state.procs.iter().filter_map(|p| {
        let pid = p.live_pid().filter(|&pid| crate::supervisor::group_alive(pid))?;
        Some((p.name.clone(), pid))
    }));
    anyhow::ensure!(procs.len() > 1, "no process of the stack in {} is running", dir.display());
    if !json {
        eprintln!("measuring {} processes for {seconds} s …", procs.len());
    }
    let usage = measure(&procs, Duration::from_secs_f64(seconds));
    let total: f64 = usage.iter().map(|u| u.cpu_percent).sum();
    if json {
        let v = serde_json::json!({"seconds": seconds, "processes": usage, "total_percent": total});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("  {:<12} {:>8} {:>8}", "process", "pid", "% core");
        for u in &usage {
            println!("  {:<12} {:>8} {:>8.2}", u.process, u.pid, u.cpu_percent);
        }
        println!("  {:<12} {:>8} {:>8.2}", "total", "", total);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_past_a_name_with_spaces_and_parentheses() {
        let line = "4242 (tokio (rt) w) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_stat(line), Some(Stat { ppid: 17, ticks: 287 }));
        assert_eq!(parse_stat("4242 tokio S 17"), None, "no name in parentheses");
        assert_eq!(parse_stat("4242 (x) S 17 1 1"), None, "too short");
        assert_eq!(parse_stat("4242 (x) S seventeen 1 1 0 -1 0 0 0 0 0 1 1 0 0"), None, "not a number");
    }

    #[test]
    fn a_tree_is_a_process_and_everything_below_it() {
        let stat = |ppid| Stat { ppid, ticks: 1 };
        let stats: HashMap<u32, Stat> =
            [(1, stat(0)), (10, stat(1)), (11, stat(10)), (12, stat(10)), (13, stat(12)), (20, stat(1))]
                .into();
        let below = children(&stats);
        let mut t = tree(10, &below, &[10]);
        t.sort_unstable();
        assert_eq!(t, [10, 11, 12, 13]);
        assert_eq!(tree(99, &below, &[99]), [99], "an unknown pid is itself only");
        assert_eq!(ticks(&t, &stats), 4);
        // Another measured process below it is measured on its own, with its children.
        let mut t = tree(1, &below, &[1, 12]);
        t.sort_unstable();
        assert_eq!(t, [1, 10, 11, 20]);
    }

    #[test]
    fn this_process_burning_a_core_measures_about_one_core() {
        let me = std::process::id();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let spinner = std::thread::spawn(move || {
            let mut x = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        });
        let usage = measure(&[("me".to_owned(), me)], Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spinner.join().unwrap();
        // A spinning thread on a shared machine: anything from a sliver to a whole core, never
        // nothing and never more than the machine has.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert!(usage[0].cpu_percent > 0.0 && usage[0].cpu_percent <= 100.0 * cores + 10.0, "{usage:?}");
    }

    #[test]
    fn no_stack_and_a_bad_span_are_told() {
        let dir = std::env::temp_dir().join(format!("lab-cpu-test-{}", std::process::id()));
        let e = cpu(&dir, 1.0, false).unwrap_err().to_string();
        assert!(e.contains("no stack runs from"), "{e}");
        for bad in [0.0, -1.0, f64::NAN, 4000.0] {
            let e = cpu(&dir, bad, true).unwrap_err().to_string();
            assert!(e.contains("--seconds"), "{bad}: {e}");
        }
    }
}
