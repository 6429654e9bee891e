//! `recovery-bench`: issue 11's recovery measurement — how long does a crashed matcher take to be
//! ready again, against the length of the `orders` log, with and without snapshots?
//!
//! **One stack** for the whole run ([`perf::feed`]: broker, Redis without persistence, the release
//! `matcher` beside this executable, free loopback ports, a fresh run directory), with the
//! matcher's `--snapshot-every` set to `--snapshot-every-commands` and its Redis retention to 20 s
//! (replay writes nothing to Redis; this only keeps Redis small while the log is built). The log
//! grows from one length to the next: for each `--lengths` N (ascending), it produces the
//! bounded-book flow of `mem-bench` until the log holds N commands, waits until the matcher has
//! *caught up* (its group's committed offsets reach the end of every partition: exact), waits 1 s
//! more so a snapshot being written is on disk, and then measures two crash recoveries:
//!
//! - **with snapshots**: SIGKILL the matcher's process group (the supervisor's `kill`: a crash),
//!   start it again, and time from just before the start until `GET /readyz` answers 200 (polled
//!   every 5 ms). `/readyz` answers 200 only once the matcher has *caught up*: everything the log
//!   held at start has gone through both rings and the I/O thread. It loads the newest snapshot
//!   and replays only past its offsets (commands below the committed offset are replayed without
//!   writing). The matcher's log must say it `restored the books from a snapshot`; the report
//!   gives the snapshot's offsets and the `start_at` / `remaining` of its `replaying the orders
//!   topic` line.
//! - **without snapshots**: SIGKILL again, delete every file in the snapshot directory, start,
//!   time to ready the same way: it replays the whole log (its log must say `no usable
//!   snapshot`). The replay rate is the log length over this time.
//!
//! For each it also reads the matcher's own figure from its log timestamps: its first line after
//! the start → `caught up with the orders log` (process start-up before its first line, a few ms,
//! is not in it), and when its I/O thread had read the last message of each output partition
//! (`output topics: emitting only past their last events`: it takes nothing from the book thread
//! before). Then it prints a Markdown table with the conditions, and the marginal full-replay rate
//! between consecutive lengths (the fixed cost of a start cancels out). A matcher replaying a long
//! log still takes snapshots every `--snapshot-every` commands it applies, replayed ones included,
//! so the full replay pays for those too (as a real restart does).
//!
//! Runtime: building the log runs at ~5,000 commands/s on the 2-vCPU VM (producer, broker, matcher
//! and Redis on 2 cores), so the default 1,000,000 takes ~3–4 min; the full replays (1.11 M
//! commands in all) at 10–40k/s add 0.5–2 min; ~5–7 min in all (292 s on 2026-12-01, with
//! other tests running beside it; the run directory reaches ~1.4 GB, mostly the broker's sqlite). Progress: a bar on a terminal,
//! a line every 5 s otherwise, a line per recovery. The stack stops at the end, on an error and on
//! Ctrl-C (nothing is left running); the run directory goes too unless `--keep`.
//!
//! Flags: `--lengths N,N,…` (10000,100000,1000000), `--snapshot-every-commands N` (10000),
//! `--chunk N` (2000, at most 4096), `--max-lag N` (20000), `--accounts N` (8), `--seed N` (1),
//! `--timeout S` (600: the longest wait for a catch-up or a recovery), `--keep`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use perf::feed::{
    bench_main, bench_plan, each_flag, matcher_proc, thousands, whole_number, whole_numbers, Feed,
    FeedConfig, Progress, RunDir, CANCEL_AFTER,
};
use stack::Supervisor;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: recovery-bench [--lengths N,N,...] [--snapshot-every-commands N] [--chunk N] [--max-lag N] [--accounts N] [--seed N] [--timeout S] [--keep]

Builds an orders log of each --lengths N commands (ascending, in one stack of its own: broker,
Redis, the release matcher beside this binary, which snapshots every --snapshot-every-commands
commands), waits until the matcher has persisted all of it, then SIGKILLs and restarts the matcher
twice: with its snapshots, and with the snapshot directory emptied (a full replay). Each time it
times start -> /readyz 200 and reads the matcher's log; prints a Markdown table.

  --lengths N,N,...              log lengths in commands (10000,100000,1000000)
  --snapshot-every-commands N    the matcher's --snapshot-every (10000)
  --chunk N                      commands produced per awaited chunk (2000, at most 4096)
  --max-lag N                    at most this many produced and not yet persisted (20000)
  --accounts N                   accounts in the flow (8)
  --seed N                       the flow's seed (1)
  --timeout S                    longest wait for a catch-up or a recovery (600)
  --keep                         keep the run directory (logs, snapshots, broker data)";

/// Seconds Redis keeps an ended order's keys (only the production phase writes Redis).
const REDIS_RETENTION_SECS: u64 = 20;

/// After the catch-up and before the kill: a snapshot the last commands triggered is written by a
/// short-lived thread in milliseconds; give it this long to be on disk.
const SETTLE: Duration = Duration::from_secs(1);

// ---- flags -------------------------------------------------------------------------------------

#[derive(Debug)]
struct Flags {
    /// Log lengths, ascending, distinct.
    lengths: Vec<u64>,
    snapshot_every: u64,
    chunk: u64,
    max_lag: u64,
    accounts: usize,
    seed: u64,
    timeout: Duration,
    keep: bool,
}

fn flags(args: &[String]) -> Result<Flags, String> {
    let mut f = Flags {
        lengths: vec![10_000, 100_000, 1_000_000],
        snapshot_every: 10_000,
        chunk: 2_000,
        max_lag: 20_000,
        accounts: 8,
        seed: 1,
        timeout: Duration::from_secs(600),
        keep: false,
    };
    f.keep = each_flag(args, USAGE, |name, value| {
        let num = |v: &str| whole_number(name, v, USAGE);
        match name {
            "--lengths" => f.lengths = whole_numbers(name, value, USAGE)?,
            "--snapshot-every-commands" => f.snapshot_every = num(value)?,
            "--chunk" => f.chunk = num(value)?,
            "--max-lag" => f.max_lag = num(value)?,
            "--accounts" => f.accounts = num(value)? as usize,
            "--seed" => f.seed = num(value)?,
            "--timeout" => f.timeout = Duration::from_secs(num(value)?),
            _ => return Err(format!("unknown flag {name}\n{USAGE}")),
        }
        Ok(())
    })?;
    f.lengths.sort_unstable();
    f.lengths.dedup();
    if f.lengths.is_empty() || f.lengths[0] == 0 {
        return Err(format!("--lengths: at least one length, each > 0\n{USAGE}"));
    }
    if f.snapshot_every == 0
        || f.chunk == 0
        || f.chunk > CANCEL_AFTER
        || f.max_lag < f.chunk
        || f.accounts < 2
        || f.timeout.is_zero()
    {
        return Err(format!(
            "need --snapshot-every-commands > 0, 0 < --chunk <= {CANCEL_AFTER}, --max-lag >= --chunk, \
             --accounts >= 2, --timeout > 0\n{USAGE}"
        ));
    }
    Ok(f)
}

fn main() {
    bench_main("recovery-bench", USAGE, flags, run);
}

// ---- the matcher's log -------------------------------------------------------------------------

/// What one start of the matcher wrote in its log, up to its catch-up.
#[derive(Clone, Debug, PartialEq)]
struct LogFacts {
    /// The timestamp of its first line (seconds since the epoch).
    first: f64,
    /// … of `replaying the orders topic`.
    replaying: f64,
    /// … of `caught up with the orders log`.
    caught_up: f64,
    /// … of `output topics: emitting only past their last events`: the I/O thread has read the
    /// last message of each output partition (it writes nothing before; absent on empty topics).
    outlet: Option<f64>,
    /// The offsets of the snapshot it restored the books from (by partition), if it did.
    restored: Option<Vec<(i64, i64)>>,
    /// Where it started reading each partition (`start_at`; empty: every partition from its start).
    start_at: Vec<(i64, i64)>,
    /// Commands it read to catch up (`remaining`: the log's end minus `start_at`).
    replayed: u64,
}

impl LogFacts {
    /// The matcher's own recovery time: first line → caught up.
    fn own(&self) -> f64 {
        self.caught_up - self.first
    }

    /// Seconds from the first line until the output topics' last events were read, or `–`.
    fn outlet_text(&self) -> String {
        self.outlet.map_or("–".into(), |t| format!("{:.2}", t - self.first))
    }
}

/// Reads the lines one start of the matcher wrote (its log from just before that start on): the
/// first timestamped line, the snapshot it restored, `replaying the orders topic` and `caught up
/// with the orders log`. Supervisor lines (`[lab …]`) are skipped. An error says what is missing.
fn parse_log(text: &str) -> Result<LogFacts, String> {
    let (mut first, mut replaying, mut caught_up, mut restored, mut outlet) = (None, None, None, None, None);
    let mut start_at = Vec::new();
    let mut replayed = 0;
    for line in text.lines() {
        let Some((stamp, rest)) = line.split_once(' ') else { continue };
        let Some(ts) = parse_timestamp(stamp) else { continue };
        first.get_or_insert(ts);
        if rest.contains("restored the books from a snapshot") {
            let offsets = field(rest, "offsets").ok_or("a restore line without offsets")?;
            restored = Some(pairs(offsets).ok_or(format!("restore offsets {offsets:?} are not pairs"))?);
        } else if rest.contains("replaying the orders topic") && replaying.is_none() {
            replaying = Some(ts);
            let at = field(rest, "start_at").ok_or("a replay line without start_at")?;
            start_at = pairs(at).ok_or(format!("start_at {at:?} is not pairs"))?;
            let remaining = field(rest, "remaining").ok_or("a replay line without remaining")?;
            replayed = remaining.parse().map_err(|_| format!("remaining {remaining:?} is not a count"))?;
        } else if rest.contains("output topics: emitting only past their last events") {
            outlet = Some(ts);
        } else if rest.contains("caught up with the orders log") {
            caught_up = Some(ts);
            break;
        }
    }
    Ok(LogFacts {
        first: first.ok_or("no timestamped line")?,
        replaying: replaying.ok_or("no `replaying the orders topic` line")?,
        caught_up: caught_up.ok_or("no `caught up with the orders log` line")?,
        outlet,
        restored,
        start_at,
        replayed,
    })
}

/// `2026-12-01T12:57:06.103966Z` → seconds since the Unix epoch (UTC; `tracing`'s timestamps).
fn parse_timestamp(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || !(0.0..61.0).contains(&sec)
    {
        return None;
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3_600 + min * 60) as f64 + sec)
}

/// The value of ` name=` in a `tracing` line: a bracketed Debug value (`{0: 5, 1: 7}`,
/// `[(0, 5)]`) whole, else up to the next space.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    let end = match rest.chars().next()? {
        open @ ('{' | '[') => {
            let close = if open == '{' { '}' } else { ']' };
            rest.find(close)? + 1
        }
        _ => rest.find(' ').unwrap_or(rest.len()),
    };
    Some(&rest[..end])
}

/// `{0: 5, 1: 7}` or `[(0, 5), (1, 7)]` → `[(0, 5), (1, 7)]`, sorted by the first; `None` if the
/// numbers do not pair up or something else is in the way.
fn pairs(s: &str) -> Option<Vec<(i64, i64)>> {
    let numbers: Vec<i64> = s
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if !numbers.len().is_multiple_of(2) || s.chars().any(|c| c.is_alphabetic()) {
        return None;
    }
    let mut out: Vec<(i64, i64)> = numbers.chunks(2).map(|c| (c[0], c[1])).collect();
    out.sort_unstable();
    Some(out)
}

/// `p0 @ 5, p1 @ 7` (or `from the start`).
fn offsets_text(pairs: &[(i64, i64)]) -> String {
    if pairs.is_empty() {
        return "from the start".into();
    }
    pairs.iter().map(|(p, o)| format!("p{p} @ {}", thousands(*o as u64))).collect::<Vec<_>>().join(", ")
}

// ---- the run -----------------------------------------------------------------------------------

/// One measured recovery.
#[derive(Clone, Debug, PartialEq)]
struct Recovery {
    /// From just before the start to `/readyz` 200, as the bench saw it.
    wall: Duration,
    /// From the matcher's log.
    facts: LogFacts,
}

/// One row of the table: a log length and its two recoveries.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    /// Commands in the log.
    length: u64,
    /// Recovery from the newest snapshot.
    with: Recovery,
    /// Recovery from the log alone.
    without: Recovery,
}

fn run(f: &Flags, cancel: &AtomicBool) -> anyhow::Result<()> {
    let dir = RunDir::create("recovery-bench", f.keep)?;
    let mut plan = bench_plan(&dir.path)?;
    let matcher = matcher_proc(&mut plan)?;
    matcher.args.extend(["--snapshot-every".into(), f.snapshot_every.to_string()]);
    matcher.env.push(("MATCHER_REDIS_RETENTION_SECS".into(), REDIS_RETENTION_SECS.to_string()));
    let snapshots =
        PathBuf::from(matcher.flag("--snapshot-dir").context("the matcher has no --snapshot-dir")?);
    let longest = *f.lengths.last().expect("at least one length");
    let expected = 15.0 + longest as f64 / 5_000.0 + f.lengths.iter().sum::<u64>() as f64 / 20_000.0;
    eprintln!(
        "recovery-bench: log lengths {:?}, a snapshot every {} commands; expect ~{:.0} min (~5,000 commands/s \
         to build the log, ~20,000/s to replay it)",
        f.lengths,
        thousands(f.snapshot_every),
        (expected / 60.0).ceil()
    );
    eprintln!("starting broker, Redis and the matcher in {}", dir.path.display());
    let conditions = conditions(f);
    let started = Instant::now();
    let mut sup = Supervisor::new(plan, None).with_output(|line| eprintln!("{line}"));
    let outcome = sup.start_all(cancel).and_then(|()| measure(&mut sup, f, &snapshots, cancel));
    eprintln!("stopping the stack");
    sup.stop_all();
    let rows = outcome?;
    println!("{}", table(&rows, &conditions, started.elapsed()));
    Ok(())
}

/// What the numbers were measured on.
fn conditions(f: &Flags) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!(
        "{}; a snapshot every {} commands (`--snapshot-every`); {} cores ({cpu}) shared by the broker (Tansu, \
         sqlite), Redis, the release matcher and this bench (idle while the matcher recovers); load average \
         {load} at the start; bounded-book flow, {} accounts, 3 symbols, 2 partitions",
        stack::supervisor::utc_now(),
        thousands(f.snapshot_every),
        std::thread::available_parallelism().map_or(0, usize::from),
        f.accounts
    )
}

/// Builds the log length by length and measures the two recoveries at each.
fn measure(
    sup: &mut Supervisor,
    f: &Flags,
    snapshots: &Path,
    cancel: &AtomicBool,
) -> anyhow::Result<Vec<Row>> {
    let mut feed = Feed::connect(sup, &FeedConfig { chunk: f.chunk, accounts: f.accounts, seed: f.seed })?;
    let longest = *f.lengths.last().expect("at least one length");
    let mut progress = Progress::new(longest, "persisted")?;
    let mut rows = Vec::new();
    for &length in &f.lengths {
        let mut on_poll = |_: &Supervisor, produced: u64, lag: u64| {
            if progress.due() {
                progress.show(produced - lag, format!("produced {produced}  lag {lag}"));
            }
        };
        feed.produce_until(length, sup, f.max_lag, cancel, f.timeout, &mut on_poll)?;
        feed.wait_for_lag(sup, 0, cancel, f.timeout, &mut on_poll)?;
        let end: i64 = feed.ends().iter().sum();
        ensure!(end as u64 == length, "the log holds {end} commands, not {length}");
        progress.say(&format!(
            "the log holds {} commands, all persisted; crashing the matcher",
            thousands(length)
        ));
        std::thread::sleep(SETTLE);
        let with = progress.bar.suspend(|| recover(sup, snapshots, false, cancel, f.timeout))?;
        if with.facts.restored.is_none() {
            progress.say("WARNING: the matcher restored no snapshot (its log says why)");
        }
        progress.say(&format!(
            "with snapshots: ready in {:.2} s (its log: {:.2} s), restored {}, replayed {} commands ({})",
            with.wall.as_secs_f64(),
            with.facts.own(),
            with.facts.restored.as_deref().map_or("nothing".into(), offsets_text),
            thousands(with.facts.replayed),
            offsets_text(&with.facts.start_at)
        ));
        let without = progress.bar.suspend(|| recover(sup, snapshots, true, cancel, f.timeout))?;
        ensure!(
            without.facts.restored.is_none(),
            "the matcher restored a snapshot from an emptied directory"
        );
        if without.facts.replayed != length {
            progress.say(&format!(
                "WARNING: the full replay read {} commands, the log holds {}",
                without.facts.replayed, length
            ));
        }
        progress.say(&format!(
            "without snapshots: ready in {:.2} s (its log: {:.2} s), replayed {} commands",
            without.wall.as_secs_f64(),
            without.facts.own(),
            thousands(without.facts.replayed)
        ));
        rows.push(Row { length, with, without });
    }
    progress.bar.finish_and_clear();
    Ok(rows)
}

/// SIGKILLs the matcher, empties the snapshot directory if `wipe`, starts it again and times it to
/// `/readyz` 200; then reads what this start wrote in its log.
fn recover(
    sup: &mut Supervisor,
    snapshots: &Path,
    wipe: bool,
    cancel: &AtomicBool,
    timeout: Duration,
) -> anyhow::Result<Recovery> {
    let log = sup.plan().dir.join("matcher.log");
    let port = sup.plan().get("matcher").context("a matcher in the plan")?.port;
    sup.kill("matcher")?;
    let files: Vec<PathBuf> = match std::fs::read_dir(snapshots) {
        Ok(dir) => dir.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    if wipe {
        for file in &files {
            std::fs::remove_file(file).with_context(|| format!("removing {}", file.display()))?;
        }
    }
    eprintln!(
        "  matcher killed; {} snapshot file(s){}; starting it again",
        files.len(),
        if wipe { " deleted" } else { " kept" }
    );
    let from = std::fs::metadata(&log).map_or(0, |m| m.len());
    let t0 = Instant::now();
    sup.start("matcher")?;
    let mut last_line = Instant::now();
    loop {
        if cancel.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if stack::probe::http_get(port, "/readyz").is_some_and(|(status, _)| status == 200) {
            break;
        }
        if !sup.running("matcher") {
            bail!("the matcher exited while recovering; its log ends:\n{}", sup.tail("matcher", 20));
        }
        if t0.elapsed() > timeout {
            bail!("the matcher was not ready {timeout:?} after its start:\n{}", sup.tail("matcher", 20));
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            let waiting = stack::probe::waiting_for(&stack::Probe::Http("/readyz".into()), port);
            eprintln!("  {:>5.1} s  {}", t0.elapsed().as_secs_f64(), waiting.unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = t0.elapsed();
    // `/readyz` turns 200 just before the catch-up line is logged: give the line a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let bytes = std::fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
        let text = String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or_default());
        match parse_log(&text) {
            Ok(facts) => return Ok(Recovery { wall, facts }),
            Err(e) if Instant::now() > deadline => bail!("the matcher's log after its start: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The report: the table, then the details and the conditions.
fn table(rows: &[Row], conditions: &str, took: Duration) -> String {
    let mut out =
        String::from("# recovery-bench: matcher crash recovery against the orders log's length\n\n");
    out += "| log length (commands) | recovery with snapshots (s) | commands replayed | recovery without (s) | commands replayed | replay rate without (commands/s) |\n";
    out += "|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        let with_note = if r.with.facts.restored.is_some() { "" } else { " (no snapshot restored)" };
        out += &format!(
            "| {} | {:.2}{with_note} | {} | {:.2} | {} | {} |\n",
            thousands(r.length),
            r.with.wall.as_secs_f64(),
            thousands(r.with.facts.replayed),
            r.without.wall.as_secs_f64(),
            thousands(r.without.facts.replayed),
            thousands(
                (r.without.facts.replayed as f64 / r.without.wall.as_secs_f64().max(1e-9)).round() as u64
            )
        );
    }
    let marginal: Vec<String> = rows
        .windows(2)
        .map(|w| {
            let (a, b) = (&w[0].without, &w[1].without);
            let secs = b.wall.as_secs_f64() - a.wall.as_secs_f64();
            let commands = b.facts.replayed.saturating_sub(a.facts.replayed);
            let rate =
                if secs > 0.0 { thousands((commands as f64 / secs).round() as u64) } else { "n/a".into() };
            format!("{} → {}: {rate}/s", thousands(w[0].length), thousands(w[1].length))
        })
        .collect();
    if !marginal.is_empty() {
        out += &format!(
            "\nMarginal full-replay rate (extra commands over extra seconds between two lengths: the fixed cost \
             of a start cancels out; meaningful only where both replays outlast it, as a shorter one hides \
             behind it): {}.\n",
            marginal.join("; ")
        );
    }
    out +=
        "\nRecovery = SIGKILL, start, until `GET /readyz` answers 200 (the matcher has caught up with the \
            whole log: everything read, through both rings and the I/O thread), timed by the bench. The \
            matcher's own figure, from its log: its first line → `caught up with the orders log`; the replay \
            alone: `replaying the orders topic` → caught up; the output topics read: its first line → `output \
            topics: emitting only past their last events` (the I/O thread reads the last message of each \
            output partition before it takes anything from the book thread).\n\n";
    out += "| log length | snapshot restored (next offset per partition) | resumed at (`start_at`) | matcher's log, with (s) | matcher's log, without (s) | of which replay, without (s) | output topics read after (s), with / without |\n";
    out += "|---:|---|---|---:|---:|---:|---:|\n";
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} / {} |\n",
            thousands(r.length),
            r.with.facts.restored.as_deref().map_or("none".into(), offsets_text),
            offsets_text(&r.with.facts.start_at),
            r.with.facts.own(),
            r.without.facts.own(),
            r.without.facts.caught_up - r.without.facts.replaying,
            r.with.facts.outlet_text(),
            r.without.facts.outlet_text()
        );
    }
    out += &format!("\nConditions: {conditions}; the whole run took {:.0} s.", took.as_secs_f64());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH: &str = "\
[lab 2026-12-01T18:10:00Z] starting: /x/matcher --snapshot-every 10000
2026-12-01T18:10:00.100000Z  INFO matcher::runtime::book_thread: book thread core=1 pinned=true
2026-12-01T18:10:00.150000Z  INFO matcher::runtime::snapshots: restored the books from a snapshot; replaying the log from its offsets path=/tmp/s/p0-000.snap offsets=[(1, 49990), (0, 50012)] books=3 open_orders=301
2026-12-01T18:10:00.200000Z  INFO matcher::runtime::consumer: replaying the orders topic partitions=2 emit_from={1: 50000, 0: 50000} start_at={0: 50012, 1: 49990} remaining=-22
2026-12-01T18:10:00.700000Z  INFO matcher::runtime::io: output topics: emitting only past their last events last={(Trades, 0): (1082, 1)}
2026-12-01T18:10:00.900000Z  INFO matcher::runtime::io: caught up with the orders log: the book is current; ready
2026-12-01T18:10:01.000000Z  INFO matcher::runtime::io: snapshot written
";

    #[test]
    fn the_log_of_a_start_gives_the_snapshot_the_offsets_and_the_times() {
        // `remaining` is a count: a negative one is refused.
        assert!(parse_log(WITH).unwrap_err().contains("remaining"));
        let log = WITH.replace("remaining=-22", "remaining=998");
        let facts = parse_log(&log).unwrap();
        assert_eq!(facts.restored, Some(vec![(0, 50_012), (1, 49_990)]));
        assert_eq!(facts.start_at, vec![(0, 50_012), (1, 49_990)]);
        assert_eq!(facts.replayed, 998);
        assert_eq!(facts.outlet_text(), "0.60");
        assert!((facts.own() - 0.8).abs() < 1e-6, "{}", facts.own());
        assert!((facts.caught_up - facts.replaying - 0.7).abs() < 1e-6);
        assert_eq!(offsets_text(&facts.start_at), "p0 @ 50,012, p1 @ 49,990");

        let full = "2026-12-01T23:59:59.500000Z  INFO m: no usable snapshot: replaying the orders log from its start dir=/s\n\
                    2026-12-01T23:59:59.600000Z  INFO m: replaying the orders topic partitions=2 emit_from={0: 5, 1: 5} start_at={} remaining=10\n\
                    2026-12-02T00:00:01.500000Z  INFO m: caught up with the orders log: the book is current; ready\n";
        let facts = parse_log(full).unwrap();
        assert_eq!((&facts.restored, facts.start_at.as_slice(), facts.replayed), (&None, &[][..], 10));
        assert!((facts.own() - 2.0).abs() < 1e-6, "across midnight: {}", facts.own());
        assert_eq!(offsets_text(&facts.start_at), "from the start");
        assert_eq!(facts.outlet_text(), "–");
    }

    #[test]
    fn a_log_without_the_lines_or_with_garbage_is_an_error() {
        assert!(parse_log("").unwrap_err().contains("no timestamped line"));
        let not_caught_up = WITH.replace("remaining=-22", "remaining=5").replace("caught up with", "behind");
        assert!(parse_log(&not_caught_up).unwrap_err().contains("caught up"));
        let no_replay = "2026-12-01T18:10:00.100000Z  INFO m: caught up with the orders log\n";
        assert!(parse_log(no_replay).unwrap_err().contains("replaying"));
        let bad = WITH
            .replace("remaining=-22", "remaining=5")
            .replace("start_at={0: 50012, 1: 49990}", "start_at={0: x}");
        assert!(parse_log(&bad).unwrap_err().contains("start_at"));
        for stamp in [
            "2026-13-01T00:00:00Z",
            "2026-12-01T00:00:00",
            "yesterday",
            "2026-12-01T24:00:00Z",
            "2026-12-01T00:00:61Z",
        ] {
            assert_eq!(parse_timestamp(stamp), None, "{stamp}");
        }
        assert_eq!(parse_timestamp("1970-01-02T00:00:01.5Z"), Some(86_401.5));
        assert_eq!(pairs("{0: 1, 1}"), None);
        assert_eq!(field("a x=1 b=2", "b"), Some("2"));
        assert_eq!(field("a x=1", "b"), None);
    }

    #[test]
    fn flags_sort_the_lengths_and_refuse_bad_input() {
        let args: Vec<String> = ["--lengths", "100000,10_000,10000", "--snapshot-every-commands", "5000"]
            .map(String::from)
            .to_vec();
        let f = flags(&args).unwrap();
        assert_eq!((f.lengths.as_slice(), f.snapshot_every), (&[10_000, 100_000][..], 5_000));
        assert_eq!(flags(&[]).unwrap().lengths, [10_000, 100_000, 1_000_000]);
        for bad in [
            &["--lengths", "0,10"][..],
            &["--lengths", ""],
            &["--lengths", "ten"],
            &["--snapshot-every-commands", "0"],
            &["--chunk", "5000"],
            &["--frobnicate", "1"],
            &["--seed"],
        ] {
            let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(flags(&args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_table_has_a_row_per_length_and_the_replay_rate() {
        let facts = |replayed, restored: Option<Vec<(i64, i64)>>| LogFacts {
            first: 0.0,
            replaying: 0.1,
            caught_up: 2.0,
            outlet: Some(1.5),
            restored,
            start_at: vec![(0, 5), (1, 6)],
            replayed,
        };
        let row = Row {
            length: 100_000,
            with: Recovery {
                wall: Duration::from_millis(500),
                facts: facts(4_000, Some(vec![(0, 5), (1, 6)])),
            },
            without: Recovery { wall: Duration::from_secs(4), facts: facts(100_000, None) },
        };
        let text = table(std::slice::from_ref(&row), "here", Duration::from_secs(60));
        assert!(text.contains("| 100,000 | 0.50 | 4,000 | 4.00 | 100,000 | 25,000 |"), "{text}");
        assert!(
            text.contains("| 100,000 | p0 @ 5, p1 @ 6 | p0 @ 5, p1 @ 6 | 2.00 | 2.00 | 1.90 | 1.50 / 1.50 |"),
            "{text}"
        );
        let mut longer = row.clone();
        longer.length = 1_000_000;
        longer.without.wall = Duration::from_secs(40);
        longer.without.facts.replayed = 1_000_000;
        let text = table(&[row.clone(), longer], "here", Duration::ZERO);
        assert!(text.contains("100,000 → 1,000,000: 25,000/s"), "{text}");
        let mut no_snapshot = row;
        no_snapshot.with.facts.restored = None;
        assert!(table(&[no_snapshot], "here", Duration::ZERO).contains("0.50 (no snapshot restored)"));
    }
}
