//! `mem-bench`: issue 11's memory benchmark — does the matcher (and Redis) stay flat as history
//! grows?
//!
//! It starts a stack of its own with the `stack` crate (the description `./lab up` and the
//! integration tests use): broker, Redis (no persistence) and the matcher only, on free loopback
//! ports in a fresh run directory, with the release `matcher` beside this executable and
//! `MATCHER_REDIS_RETENTION_SECS` set to `--retention-secs` (the seconds Redis keeps an ended
//! order's keys; a matcher without that setting ignores it, and the report says which). It then
//! produces `--orders` commands straight to the `orders` topic — an idempotent, `acks=all`
//! producer, keyed by symbol, in chunks of `--chunk` whose delivery reports it awaits before the
//! next (Tansu on sqlite fell over under an unbounded idempotent load: DESIGN.md §1), never more
//! than `--max-lag` commands ahead of what the matcher has persisted.
//!
//! **The flow** is [`perf::feed::Flow`]: it keeps the open book bounded, as a real market does
//! (crossing pairs, IOC takers, orders away from the market canceled later; about 300 orders rest
//! at any time; every client order id is new). "Orders" below counts commands on the `orders`
//! topic: new orders and cancels (~7 % cancels). The stack, the producer and the caught-up wait
//! are [`perf::feed`]'s, shared with `recovery-bench`.
//!
//! **Checkpoints** (`--at`, plus the `--warmup` baseline and the end): the producer stops, and the
//! matcher has *caught up* when its consumer group's committed offsets (read with
//! `committed_offsets`, as the matcher itself reads them on start) reach the produced end of every
//! partition — the matcher commits an offset only after the events of every command before it are
//! in Redis and on the output topics, so this is exact. Then it samples the matcher's resident
//! memory (`VmRSS` of its pid, from the supervisor), Redis `INFO memory` `used_memory` and
//! `DBSIZE`, and the matcher's `/metrics` (`matcher_resting_orders`, trades, rejects), and prints a
//! Markdown table with the elapsed time and the throughput since the previous row, then the growth
//! from the first row to the last in MB per 100k orders. Progress: a bar on a terminal, a line every
//! 5 s otherwise. The stack stops at the end, on an error and on Ctrl-C (nothing is left running);
//! the run directory goes too unless `--keep`.
//!
//! Runtime: the whole pipeline (producer, broker, matcher, Redis on 2 cores) moved 5,000–6,300
//! commands a second on the 2-vCPU VM (2026-12-01, with a build running beside it), so 1,000,000
//! took 192 s and `--orders 200000` 36 s. With a retention of R seconds Redis fills for R seconds
//! and a little more (its sampling expiry lags, `expired_stale_perc`), so compare Redis from the
//! first row sampled after that, which the last line of the report does.
//!
//! Flags: `--orders N` (1000000), `--at N,N,…` (100000,500000,1000000), `--warmup N` (50000; 0:
//! none), `--retention-secs S` (20; 0 asks for none), `--chunk N` (2000, at most 4096), `--max-lag N` (20000),
//! `--accounts N` (8), `--seed N` (1), `--timeout S` (600: the longest wait for the matcher to
//! catch up at a checkpoint), `--keep` (keep the run directory with the logs).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use perf::feed::{
    bench_main, bench_plan, each_flag, matcher_proc, metric_sum, rss_kb, thousands, whole_number,
    whole_numbers, Counts, Feed, FeedConfig, Progress, RunDir, CANCEL_AFTER,
};
use stack::Supervisor;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: mem-bench [--orders N] [--at N,N,...] [--warmup N] [--retention-secs S] [--chunk N] [--max-lag N] [--accounts N] [--seed N] [--timeout S] [--keep]

Runs --orders commands (new orders and cancels) through a stack of its own (broker, Redis, the
release matcher beside this binary) and reports the matcher's RSS, Redis used_memory and keys and
the open book at each checkpoint (--at, plus the --warmup baseline and the end), each once the
matcher's committed offsets reach everything produced.";

// ---- flags -------------------------------------------------------------------------------------

struct Flags {
    orders: u64,
    /// Checkpoints, ascending, the warm-up baseline first and `orders` last.
    checkpoints: Vec<u64>,
    retention_secs: u64,
    chunk: u64,
    max_lag: u64,
    accounts: usize,
    seed: u64,
    timeout: Duration,
    keep: bool,
}

fn flags(args: &[String]) -> Result<Flags, String> {
    let (mut orders, mut at, mut warmup) = (1_000_000u64, None, 50_000u64);
    let mut f = Flags {
        orders: 0,
        checkpoints: Vec::new(),
        retention_secs: 20,
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
            "--orders" => orders = num(value)?,
            "--at" => at = Some(whole_numbers(name, value, USAGE)?),
            "--warmup" => warmup = num(value)?,
            "--retention-secs" => f.retention_secs = num(value)?,
            "--chunk" => f.chunk = num(value)?,
            "--max-lag" => f.max_lag = num(value)?,
            "--accounts" => f.accounts = num(value)? as usize,
            "--seed" => f.seed = num(value)?,
            "--timeout" => f.timeout = Duration::from_secs(num(value)?),
            _ => return Err(format!("unknown flag {name}\n{USAGE}")),
        }
        Ok(())
    })?;
    if orders == 0 || f.chunk == 0 || f.chunk > CANCEL_AFTER || f.max_lag < f.chunk || f.accounts < 2 {
        return Err(format!(
            "need --orders > 0, 0 < --chunk <= {CANCEL_AFTER}, --max-lag >= --chunk, --accounts >= 2\n{USAGE}"
        ));
    }
    if let Some(n) = at.iter().flatten().find(|&&n| n == 0 || n > orders) {
        return Err(format!("--at {n}: checkpoints must lie in 1..=--orders ({orders})"));
    }
    // The default checkpoints, as far as the run goes.
    let mut at =
        at.unwrap_or_else(|| [100_000, 500_000, 1_000_000].into_iter().filter(|&n| n <= orders).collect());
    at.extend([warmup, orders].into_iter().filter(|&n| n > 0 && n <= orders));
    at.sort_unstable();
    at.dedup();
    f.orders = orders;
    f.checkpoints = at;
    Ok(f)
}

fn main() {
    bench_main("mem-bench", USAGE, flags, run);
}

// ---- the run -----------------------------------------------------------------------------------

/// One row of the report.
struct Sample {
    orders: u64,
    rss_mb: f64,
    redis_mb: f64,
    redis_keys: u64,
    /// Keys with a TTL (`INFO keyspace` `expires=`).
    redis_expiring: u64,
    /// `INFO stats` `expired_stale_perc`: the share of keys with a TTL that are past it and not yet
    /// reclaimed by Redis's sampling expiry.
    redis_stale_perc: f64,
    resting: u64,
    trades: u64,
    rejects: u64,
    elapsed: Duration,
    per_sec: f64,
}

/// Does this matcher know the Redis retention setting? (Its `--help` names it.)
fn knows_retention(matcher: &Path) -> bool {
    std::process::Command::new(matcher)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_lowercase().contains("retention"))
        .unwrap_or(false)
}

fn run(f: &Flags, cancel: &AtomicBool) -> anyhow::Result<()> {
    let dir = RunDir::create("mem-bench", f.keep)?;
    let mut plan = bench_plan(&dir.path)?;
    let matcher = matcher_proc(&mut plan)?;
    matcher.env.push(("MATCHER_REDIS_RETENTION_SECS".into(), f.retention_secs.to_string()));
    let honoured = knows_retention(&matcher.program);
    let retention = format!(
        "Redis retention of ended orders {} s (`MATCHER_REDIS_RETENTION_SECS`; {})",
        f.retention_secs,
        if honoured { "this matcher honours it" } else { "this matcher has no such setting: ignored" }
    );
    eprintln!("mem-bench: {} commands, checkpoints {:?}; {retention}", f.orders, f.checkpoints);
    eprintln!("starting broker, Redis and the matcher in {}", dir.path.display());
    let mut sup = Supervisor::new(plan, None).with_output(|line| eprintln!("{line}"));
    sup.start_all(cancel)?;
    let outcome = Bench::connect(&sup, f).and_then(|mut bench| bench.run(&mut sup, f, cancel));
    eprintln!("stopping the stack");
    sup.stop_all();
    let (samples, counts, started) = outcome?;
    report(f, &samples, counts, &retention, honoured.then_some(f.retention_secs).filter(|&r| r > 0), started);
    Ok(())
}

/// The benchmark's connections to the stack: the feed, and Redis for its memory.
struct Bench {
    feed: Feed,
    redis: redis::Connection,
}

impl Bench {
    fn connect(sup: &Supervisor, f: &Flags) -> anyhow::Result<Bench> {
        let feed = Feed::connect(sup, &FeedConfig { chunk: f.chunk, accounts: f.accounts, seed: f.seed })?;
        let redis = redis::Client::open(sup.plan().redis.as_str())?
            .get_connection()
            .context("connecting to Redis")?;
        Ok(Bench { feed, redis })
    }

    /// Produces the flow checkpoint by checkpoint and samples at each.
    fn run(
        &mut self,
        sup: &mut Supervisor,
        f: &Flags,
        cancel: &AtomicBool,
    ) -> anyhow::Result<(Vec<Sample>, Counts, Instant)> {
        let mut progress = Progress::new(f.orders, "matched")?;
        let started = Instant::now();
        let mut samples: Vec<Sample> = Vec::new();
        let mut previous = (0u64, started);
        for &checkpoint in &f.checkpoints {
            let redis = &mut self.redis;
            let mut on_poll = |sup: &Supervisor, produced: u64, lag: u64| {
                if progress.due() {
                    let rss = sup.pid("matcher").and_then(rss_kb).map_or(0.0, |kb| kb as f64 / 1024.0);
                    let redis = redis_used(redis).unwrap_or(0) as f64 / 1e6;
                    progress.show(
                        produced - lag,
                        format!("produced {produced}  lag {lag}  RSS {rss:.1} MB  Redis {redis:.1} MB"),
                    );
                }
            };
            self.feed.produce_until(checkpoint, sup, f.max_lag, cancel, f.timeout, &mut on_poll)?;
            self.feed.wait_for_lag(sup, 0, cancel, f.timeout, &mut on_poll)?;
            let produced = self.feed.produced();
            let now = Instant::now();
            let mut s = self.sample(sup, produced)?;
            s.elapsed = now - started;
            s.per_sec = (produced - previous.0) as f64 / (now - previous.1).as_secs_f64().max(1e-9);
            previous = (produced, now);
            progress.say(&format!(
                "checkpoint {produced}: matcher RSS {:.1} MB, Redis {:.1} MB / {} keys, {} resting, {:.0}/s",
                s.rss_mb, s.redis_mb, s.redis_keys, s.resting, s.per_sec
            ));
            samples.push(s);
        }
        progress.bar.finish_and_clear();
        Ok((samples, self.feed.counts(), started))
    }

    fn sample(&mut self, sup: &Supervisor, orders: u64) -> anyhow::Result<Sample> {
        let pid = sup.pid("matcher").context("the matcher is not running")?;
        let rss_kb = rss_kb(pid).context("reading the matcher's VmRSS")?;
        let redis_used = redis_used(&mut self.redis)?;
        let redis_keys: u64 = redis::cmd("DBSIZE").query(&mut self.redis)?;
        // `db0:keys=…,expires=…,avg_ttl=…` (absent while the database is empty).
        let db0 = redis_info(&mut self.redis, "keyspace", "db0:").unwrap_or_default();
        let expires = db0.split(',').find_map(|kv| kv.strip_prefix("expires="));
        let stale = redis_info(&mut self.redis, "stats", "expired_stale_perc:")?;
        let text = self.feed.metrics()?;
        Ok(Sample {
            orders,
            rss_mb: rss_kb as f64 / 1024.0,
            redis_mb: redis_used as f64 / 1e6,
            redis_keys,
            redis_expiring: expires.and_then(|n| n.parse().ok()).unwrap_or(0),
            redis_stale_perc: stale.parse().unwrap_or(0.0),
            resting: metric_sum(&text, "matcher_resting_orders") as u64,
            trades: metric_sum(&text, "matcher_trades_total") as u64,
            rejects: metric_sum(&text, "matcher_rejects_total") as u64,
            elapsed: Duration::ZERO,
            per_sec: 0.0,
        })
    }
}

/// Redis `INFO memory` `used_memory`, in bytes.
fn redis_used(redis: &mut redis::Connection) -> anyhow::Result<u64> {
    let used = redis_info(redis, "memory", "used_memory:")?;
    used.parse().context("used_memory is not a number")
}

/// The value of the line starting with `field` in `INFO <section>`.
fn redis_info(redis: &mut redis::Connection, section: &str, field: &str) -> anyhow::Result<String> {
    let info: String = redis::cmd("INFO").arg(section).query(redis)?;
    let line = info.lines().find_map(|l| l.strip_prefix(field));
    line.map(|v| v.trim().to_owned()).with_context(|| format!("no {field} in INFO {section}"))
}

/// Prints the table and the growth; `retention`: the seconds Redis keeps ended orders, if the
/// matcher honours it (Redis fills for that long before it can be flat).
fn report(
    f: &Flags,
    samples: &[Sample],
    counts: Counts,
    conditions: &str,
    retention: Option<u64>,
    started: Instant,
) {
    println!(
        "# mem-bench: {} orders through the matcher ({} new, {} of them IOC, {} canceled later; {} cancels)\n",
        thousands(f.orders),
        thousands(counts.new),
        thousands(counts.ioc),
        thousands(counts.kept),
        thousands(counts.cancels)
    );
    println!(
        "Broker (Tansu, sqlite), Redis (no persistence) and the release matcher on {} cores; {conditions}; \
         {} accounts, 3 symbols, chunks of {} awaited, at most {} unpersisted; {:.0} s in all.\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        f.accounts,
        f.chunk,
        f.max_lag,
        started.elapsed().as_secs_f64()
    );
    println!("| orders | matcher RSS MB | Redis used_memory MB | Redis keys | resting orders | trades | rejects | elapsed s | orders/s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in samples {
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {:.1} | {} |",
            thousands(s.orders),
            s.rss_mb,
            s.redis_mb,
            thousands(s.redis_keys),
            thousands(s.resting),
            thousands(s.trades),
            thousands(s.rejects),
            s.elapsed.as_secs_f64(),
            thousands(s.per_sec.round() as u64)
        );
    }
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        println!(
            "\nRedis at the end: {} of {} keys with a TTL; expired_stale_perc {:.1} % (past their TTL, not yet \
             reclaimed by Redis's sampling expiry).",
            thousands(last.redis_expiring),
            thousands(last.redis_keys),
            last.redis_stale_perc
        );
        println!("{}", growth("Growth", first, last));
        // Redis holds every order that ended in the last `retention` seconds: it is flat only
        // from then on.
        let filled = retention.and_then(|r| samples.iter().find(|s| s.elapsed.as_secs() >= r + 2));
        if let (Some(r), Some(from)) =
            (retention, filled.filter(|s| s.orders > first.orders && s.orders < last.orders))
        {
            println!("{}", growth(&format!("After Redis's {r} s retention window, growth"), from, last));
        }
    }
}

/// "`what` from A to B orders: …" in MB (and keys) per 100k orders; empty if A is B.
fn growth(what: &str, first: &Sample, last: &Sample) -> String {
    if last.orders <= first.orders {
        return String::new();
    }
    let per = (last.orders - first.orders) as f64 / 100_000.0;
    format!(
        "{what} from {} to {} orders: matcher RSS {:+.1} MB ({:+.2} MB per 100k orders), Redis {:+.1} MB \
         ({:+.2} MB per 100k orders), Redis keys {:+} ({:+.0} per 100k orders).",
        thousands(first.orders),
        thousands(last.orders),
        last.rss_mb - first.rss_mb,
        (last.rss_mb - first.rss_mb) / per,
        last.redis_mb - first.redis_mb,
        (last.redis_mb - first.redis_mb) / per,
        last.redis_keys as i64 - first.redis_keys as i64,
        (last.redis_keys as f64 - first.redis_keys as f64) / per
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_take_the_baseline_and_the_end() {
        let args: Vec<String> = ["--orders", "200000", "--at", "100000"].map(String::from).to_vec();
        assert_eq!(flags(&args).unwrap().checkpoints, [50_000, 100_000, 200_000]);
        let args: Vec<String> = ["--orders", "1000", "--at", "5000"].map(String::from).to_vec();
        assert!(flags(&args).is_err());
        let args: Vec<String> = ["--orders", "200000"].map(String::from).to_vec();
        assert_eq!(flags(&args).unwrap().checkpoints, [50_000, 100_000, 200_000]);
        assert_eq!(flags(&[]).unwrap().checkpoints, [50_000, 100_000, 500_000, 1_000_000]);
        let args: Vec<String> = ["--chunk", "5000"].map(String::from).to_vec();
        assert!(flags(&args).is_err(), "a chunk longer than CANCEL_AFTER");
    }
}
