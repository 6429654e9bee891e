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
//! **The flow** keeps the open book bounded, as a real market does: over the default symbol
//! table and `--accounts` accounts, 70 % of episodes are a crossing pair (a GTC limit that rests,
//! then the opposite side from another account at the same price and quantity: both fill), 15 %
//! an IOC taker pair (a resting GTC maker, then an IOC from another account for more than it
//! holds: a fill and an unfilled remainder), 15 % a GTC order ten to fifty ticks away from the
//! market, canceled [`CANCEL_AFTER`] commands later by its exchange id (from its delivery report,
//! to its partition). About 300 orders rest at any time; every client order id is new. "Orders"
//! below counts commands on the `orders` topic: new orders and cancels (~7 % cancels).
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

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use common::envelope::encode_command;
use common::kafka::{DeliveryFuture, Producer};
use common::wake::Waker;
use common::{
    Account, Cancel, ClientOrderId, Command, CommandKind, NewOrder, OrderId, OrderType, Price, Qty, ShortStr,
    Side, SymbolId, SymbolTable, TimeInForce, Timestamp,
};
use perf::stream::Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use stack::{Kind, Options, Plan, Ports, Supervisor};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: mem-bench [--orders N] [--at N,N,...] [--warmup N] [--retention-secs S] [--chunk N] [--max-lag N] [--accounts N] [--seed N] [--timeout S] [--keep]

Runs --orders commands (new orders and cancels) through a stack of its own (broker, Redis, the
release matcher beside this binary) and reports the matcher's RSS, Redis used_memory and keys and
the open book at each checkpoint (--at, plus the --warmup baseline and the end), each once the
matcher's committed offsets reach everything produced.";

// ---- the flow ----------------------------------------------------------------------------------

/// A resting order is canceled this many commands after it was produced: more than a chunk, so its
/// exchange id (from its delivery report) is known when the cancel is produced.
const CANCEL_AFTER: u64 = 4_096;

/// Resting orders sit at least this many ticks from the market, so no crossing order reaches them.
const REST_AWAY: i64 = 10;

/// … and at most `REST_AWAY + REST_SPREAD - 1` ticks (inside every default symbol's band).
const REST_SPREAD: u64 = 40;

/// Crossing pairs trade within this many ticks of the reference price.
const JITTER: u64 = 5;

/// One command of the flow, before it has an exchange id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// A new order; `keep`: it rests until a later [`Step::Cancel`] names it (its id is needed).
    New { order: NewOrder, keep: bool },
    /// Cancel the kept order produced as command `of`.
    Cancel { of: u64, symbol: SymbolId, account: Account },
}

/// What the flow has made so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    /// New orders.
    new: u64,
    /// Of which IOC.
    ioc: u64,
    /// Of which kept resting until canceled.
    kept: u64,
    /// Cancels.
    cancels: u64,
}

/// The benchmark's order flow: an endless, deterministic (by seed) iterator of `(command number,
/// step)`, numbered from 0. See the module doc for the mix.
struct Flow {
    rng: Rng,
    /// Per symbol (by id): the reference price in ticks.
    references: Vec<i64>,
    accounts: Vec<Account>,
    /// The number the next command gets.
    next: u64,
    /// The rest of the current episode.
    queue: VecDeque<Step>,
    /// Kept orders not yet canceled, oldest first: (command number, symbol, account).
    resting: VecDeque<(u64, SymbolId, Account)>,
    counts: Counts,
}

impl Flow {
    fn new(table: &SymbolTable, accounts: usize, seed: u64) -> Flow {
        let accounts = (0..accounts.max(2))
            .map(|i| ShortStr::new(&format!("mb{i}")).expect("a valid account name"))
            .collect();
        Flow {
            rng: Rng::new(seed),
            references: table.iter().map(|(_, spec)| spec.reference.0).collect(),
            accounts,
            next: 0,
            queue: VecDeque::new(),
            resting: VecDeque::new(),
            counts: Counts::default(),
        }
    }

    /// The client order id of command `n`: unique for the whole run.
    fn client_id(n: u64) -> ClientOrderId {
        ShortStr::new(&format!("mb-{n}")).expect("a valid client order id")
    }

    /// Two different accounts.
    fn two_accounts(&mut self) -> (Account, Account) {
        let n = self.accounts.len() as u64;
        let a = self.rng.below(n);
        let b = (a + 1 + self.rng.below(n - 1)) % n;
        (self.accounts[a as usize], self.accounts[b as usize])
    }

    fn side(&mut self) -> Side {
        if self.rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    /// A new order numbered `n` (its place in the stream).
    fn order(
        n: u64,
        symbol: SymbolId,
        account: Account,
        side: Side,
        tif: TimeInForce,
        price: i64,
        qty: u64,
    ) -> NewOrder {
        NewOrder {
            symbol,
            account,
            client_order_id: Flow::client_id(n),
            side,
            order_type: OrderType::Limit,
            tif,
            post_only: false,
            price: Some(Price(price)),
            qty: Qty(qty),
        }
    }

    /// Queues the next episode's one or two commands (the queue is empty: they are numbered from
    /// `self.next`).
    fn episode(&mut self) {
        let n = self.next;
        let symbol = SymbolId(self.rng.below(self.references.len() as u64) as u32);
        let reference = self.references[symbol.0 as usize];
        let roll = self.rng.below(100);
        let side = self.side();
        let qty = 1 + self.rng.below(5);
        if roll < 85 {
            // A maker rests at the market price; the other side takes it all (GTC) or more (IOC).
            let price = reference + self.rng.below(2 * JITTER + 1) as i64 - JITTER as i64;
            let (maker, taker) = self.two_accounts();
            let ioc = roll >= 70;
            let (tif, taker_qty) = if ioc { (TimeInForce::Ioc, qty + 1) } else { (TimeInForce::Gtc, qty) };
            let first = Flow::order(n, symbol, maker, side, TimeInForce::Gtc, price, qty);
            let second = Flow::order(n + 1, symbol, taker, side.opposite(), tif, price, taker_qty);
            self.queue.push_back(Step::New { order: first, keep: false });
            self.queue.push_back(Step::New { order: second, keep: false });
            self.counts.new += 2;
            self.counts.ioc += u64::from(ioc);
        } else {
            // Away from the market, canceled later.
            let away = REST_AWAY + self.rng.below(REST_SPREAD) as i64;
            let price = if side == Side::Buy { reference - away } else { reference + away };
            let account = self.accounts[self.rng.below(self.accounts.len() as u64) as usize];
            let order = Flow::order(n, symbol, account, side, TimeInForce::Gtc, price, qty);
            self.queue.push_back(Step::New { order, keep: true });
            self.resting.push_back((n, symbol, account));
            self.counts.new += 1;
            self.counts.kept += 1;
        }
    }
}

impl Iterator for Flow {
    type Item = (u64, Step);

    fn next(&mut self) -> Option<(u64, Step)> {
        if self.queue.is_empty() {
            match self.resting.front() {
                Some(&(of, symbol, account)) if self.next - of >= CANCEL_AFTER => {
                    self.resting.pop_front();
                    self.queue.push_back(Step::Cancel { of, symbol, account });
                    self.counts.cancels += 1;
                }
                _ => self.episode(),
            }
        }
        let step = self.queue.pop_front()?;
        let n = self.next;
        self.next += 1;
        Some((n, step))
    }
}

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
    let mut it = args.iter();
    while let Some(name) = it.next() {
        if name == "--keep" {
            f.keep = true;
            continue;
        }
        let value = it.next().ok_or(format!("{name} needs a value\n{USAGE}"))?;
        let num = |v: &str| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("{name}: {v:?} is not a whole number\n{USAGE}"))
        };
        match name.as_str() {
            "--orders" => orders = num(value)?,
            "--at" => {
                at = Some(value.split(',').filter(|s| !s.is_empty()).map(num).collect::<Result<Vec<_>, _>>()?)
            }
            "--warmup" => warmup = num(value)?,
            "--retention-secs" => f.retention_secs = num(value)?,
            "--chunk" => f.chunk = num(value)?,
            "--max-lag" => f.max_lag = num(value)?,
            "--accounts" => f.accounts = num(value)? as usize,
            "--seed" => f.seed = num(value)?,
            "--timeout" => f.timeout = Duration::from_secs(num(value)?),
            _ => return Err(format!("unknown flag {name}\n{USAGE}")),
        }
    }
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return;
    }
    let f = match flags(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, cancel.clone()) {
            eprintln!("mem-bench: cannot handle signal {signal}: {e}");
            std::process::exit(1);
        }
    }
    if let Err(e) = run(&f, &cancel) {
        eprintln!("mem-bench: {e:#}");
        std::process::exit(1);
    }
}

// ---- the run -----------------------------------------------------------------------------------

/// The run directory, removed when dropped unless kept.
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("run directory kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

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
    let dir = RunDir {
        path: std::env::temp_dir().join(format!("trading-lab-mem-bench-{}", std::process::id())),
        keep: f.keep,
    };
    std::fs::create_dir_all(&dir.path)?;
    let mut o = Options::native(&dir.path, Ports::Free);
    (o.order_svcs, o.gateways, o.nginx_front, o.sim, o.auth) = (0, 0, false, false, false);
    (o.durable_redis, o.prometheus) = (false, false);
    let mut plan = Plan::build(&o)?;
    let matcher = plan.procs.iter_mut().find(|p| p.kind == Kind::Matcher).context("a matcher in the plan")?;
    ensure!(
        matcher.program.exists(),
        "{} not built: cargo build --release -p matcher --bin matcher",
        matcher.program.display()
    );
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

/// The benchmark's connections to the stack.
struct Bench {
    producer: Producer,
    /// Reads the matcher group's committed offsets (it never joins the group nor commits).
    offsets: BaseConsumer,
    group: String,
    partitions: i32,
    redis: redis::Connection,
    http: reqwest::blocking::Client,
    metrics_url: String,
    /// Wakes the matcher's dozing consumer when a chunk is in (as order-svc does).
    waker: Option<Waker>,
    table: SymbolTable,
    /// Per partition: the offset after the last delivered command.
    ends: Vec<i64>,
    /// Exchange ids of the kept orders not yet canceled, by command number.
    ids: HashMap<u64, OrderId>,
}

impl Bench {
    fn connect(sup: &Supervisor, f: &Flags) -> anyhow::Result<Bench> {
        let plan = sup.plan();
        let matcher = plan.get("matcher").context("a matcher in the plan")?;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &plan.kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", (2 * f.chunk + 1_000).to_string())
            .set("message.timeout.ms", "60000");
        let producer = Producer::create(&config).context("creating the producer")?;
        let group = matcher.flag("--group").unwrap_or("matcher").to_owned();
        let offsets: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &plan.kafka)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the offsets reader")?;
        let partitions = stack::plan::TOPICS.iter().find(|(t, _)| *t == "orders").map_or(1, |&(_, n)| n);
        let redis =
            redis::Client::open(plan.redis.as_str())?.get_connection().context("connecting to Redis")?;
        let waker = match matcher.flag("--wake-listen") {
            Some(addr) => Waker::new(&[addr.to_owned()])?,
            None => None,
        };
        Ok(Bench {
            producer,
            offsets,
            group,
            partitions,
            redis,
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build()?,
            metrics_url: matcher.url("/metrics"),
            waker,
            table: SymbolTable::default(),
            ends: vec![0; partitions as usize],
            ids: HashMap::new(),
        })
    }

    /// Produces the flow checkpoint by checkpoint and samples at each.
    fn run(
        &mut self,
        sup: &mut Supervisor,
        f: &Flags,
        cancel: &AtomicBool,
    ) -> anyhow::Result<(Vec<Sample>, Counts, Instant)> {
        let mut flow = Flow::new(&self.table, f.accounts, f.seed);
        let bar = indicatif::ProgressBar::new(f.orders);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "  {elapsed:>4} [{wide_bar}] {pos}/{len} matched  {msg}",
            )?
            .progress_chars("=> "),
        );
        let mut progress = Progress { bar, last: Instant::now(), last_line: Instant::now() };
        let started = Instant::now();
        let mut samples: Vec<Sample> = Vec::new();
        let (mut produced, mut previous) = (0u64, (0u64, started));
        for &checkpoint in &f.checkpoints {
            while produced < checkpoint {
                self.wait_for_lag(sup, f.max_lag, cancel, &mut progress, produced, f.timeout)?;
                let n = f.chunk.min(checkpoint - produced);
                self.produce_chunk(&mut flow, n)?;
                produced += n;
            }
            self.wait_for_lag(sup, 0, cancel, &mut progress, produced, f.timeout)?;
            let now = Instant::now();
            let mut s = self.sample(sup, produced)?;
            s.elapsed = now - started;
            s.per_sec = (produced - previous.0) as f64 / (now - previous.1).as_secs_f64().max(1e-9);
            previous = (produced, now);
            let line = format!(
                "checkpoint {produced}: matcher RSS {:.1} MB, Redis {:.1} MB / {} keys, {} resting, {:.0}/s",
                s.rss_mb, s.redis_mb, s.redis_keys, s.resting, s.per_sec
            );
            progress.bar.suspend(|| eprintln!("  {line}"));
            samples.push(s);
        }
        progress.bar.finish_and_clear();
        Ok((samples, flow.counts, started))
    }

    /// Produces the next `n` commands of `flow` and waits for every delivery report.
    fn produce_chunk(&mut self, flow: &mut Flow, n: u64) -> anyhow::Result<()> {
        let mut pending: Vec<(u64, bool, DeliveryFuture)> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (seq, step) = flow.next().context("the flow is endless")?;
            let ts = Timestamp::now();
            let (kind, key, partition, keep) = match step {
                Step::New { order, keep } => {
                    let name = self.table.get(order.symbol).map(|s| s.name.clone()).unwrap_or_default();
                    (CommandKind::New(order), Some(name), None, keep)
                }
                Step::Cancel { of, account, .. } => {
                    let order_id = self.ids.remove(&of).with_context(|| {
                        format!("command {seq} cancels command {of}, whose delivery report is not in")
                    })?;
                    let cancel = Cancel { order_id, account };
                    (CommandKind::Cancel(cancel), None, Some(i32::from(order_id.partition())), false)
                }
            };
            let payload = encode_command(&Command { id: OrderId(0), ts, kind }, &self.table);
            let mut record = FutureRecord::<str, [u8]>::to("orders").payload(&payload);
            if let Some(key) = key.as_deref() {
                record = record.key(key);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            let delivery = self.producer.send_result(record).context("enqueueing a command")?;
            pending.push((seq, keep, delivery));
        }
        for (seq, keep, delivery) in pending {
            let report = delivery.blocking_recv().context("the producer gave a message up")?;
            let d = report.map_err(|(e, _)| anyhow::anyhow!("command {seq} not delivered: {e}"))?;
            let end =
                self.ends.get_mut(d.partition as usize).context("a delivery to an unknown partition")?;
            *end = (*end).max(d.offset + 1);
            if keep {
                let id = u16::try_from(d.partition)
                    .ok()
                    .zip(u64::try_from(d.offset).ok())
                    .and_then(|(p, o)| OrderId::new(p, o))
                    .context("a delivery position that fits no order id")?;
                self.ids.insert(seq, id);
            }
        }
        if let Some(w) = &self.waker {
            w.wake();
        }
        Ok(())
    }

    /// The matcher group's committed offset per partition (0 before its first commit).
    fn committed(&self) -> anyhow::Result<Vec<i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition("orders", p);
        }
        let got = self
            .offsets
            .committed_offsets(tpl, Duration::from_secs(10))
            .with_context(|| format!("reading group {}'s committed offsets", self.group))?;
        let mut out = vec![0; self.partitions as usize];
        for e in got.elements() {
            if let (Offset::Offset(n), Some(slot)) = (e.offset(), out.get_mut(e.partition() as usize)) {
                *slot = n;
            }
        }
        Ok(out)
    }

    /// Produced but not yet persisted by the matcher, summed over the partitions.
    fn lag(&self) -> anyhow::Result<u64> {
        let committed = self.committed()?;
        Ok(self.ends.iter().zip(&committed).map(|(&e, &c)| (e - c).max(0) as u64).sum())
    }

    /// Waits until at most `max` produced commands are not yet persisted by the matcher.
    fn wait_for_lag(
        &mut self,
        sup: &mut Supervisor,
        max: u64,
        cancel: &AtomicBool,
        progress: &mut Progress,
        produced: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let since = Instant::now();
        loop {
            if cancel.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            if !sup.running("matcher") {
                bail!("the matcher exited; its log ends:\n{}", sup.tail("matcher", 20));
            }
            let lag = self.lag()?;
            if progress.due() {
                let rss = sup.pid("matcher").and_then(rss_kb).map_or(0.0, |kb| kb as f64 / 1024.0);
                let redis = self.redis_used().unwrap_or(0) as f64 / 1e6;
                progress.show(
                    produced - lag,
                    format!("produced {produced}  lag {lag}  RSS {rss:.1} MB  Redis {redis:.1} MB"),
                );
            }
            if lag <= max {
                return Ok(());
            }
            if since.elapsed() > timeout {
                bail!(
                    "the matcher did not catch up in {timeout:?}: produced up to {:?}, committed {:?}",
                    self.ends,
                    self.committed()?
                );
            }
            std::thread::sleep(Duration::from_millis(if max == 0 { 20 } else { 50 }));
        }
    }

    fn redis_used(&mut self) -> anyhow::Result<u64> {
        let used = self.redis_info("memory", "used_memory:")?;
        used.parse().context("used_memory is not a number")
    }

    /// The value of the line starting with `field` in `INFO <section>`.
    fn redis_info(&mut self, section: &str, field: &str) -> anyhow::Result<String> {
        let info: String = redis::cmd("INFO").arg(section).query(&mut self.redis)?;
        let line = info.lines().find_map(|l| l.strip_prefix(field));
        line.map(|v| v.trim().to_owned()).with_context(|| format!("no {field} in INFO {section}"))
    }

    fn sample(&mut self, sup: &Supervisor, orders: u64) -> anyhow::Result<Sample> {
        let pid = sup.pid("matcher").context("the matcher is not running")?;
        let rss_kb = rss_kb(pid).context("reading the matcher's VmRSS")?;
        let redis_used = self.redis_used()?;
        let redis_keys: u64 = redis::cmd("DBSIZE").query(&mut self.redis)?;
        // `db0:keys=…,expires=…,avg_ttl=…` (absent while the database is empty).
        let db0 = self.redis_info("keyspace", "db0:").unwrap_or_default();
        let expires = db0.split(',').find_map(|kv| kv.strip_prefix("expires="));
        let stale = self.redis_info("stats", "expired_stale_perc:")?;
        let text = self.http.get(&self.metrics_url).send()?.error_for_status()?.text()?;
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

/// The bar on a terminal; a line every 5 s otherwise.
struct Progress {
    bar: indicatif::ProgressBar,
    last: Instant,
    last_line: Instant,
}

impl Progress {
    /// True once a second.
    fn due(&mut self) -> bool {
        let due = self.last.elapsed() >= Duration::from_secs(1);
        if due {
            self.last = Instant::now();
        }
        due
    }

    fn show(&mut self, matched: u64, status: String) {
        self.bar.set_position(matched);
        if !self.bar.is_hidden() {
            self.bar.set_message(status);
        } else if self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            eprintln!(
                "  {:>5.0} s  matched {matched}/{}  {status}",
                self.bar.elapsed().as_secs_f64(),
                self.bar.length().unwrap_or(0)
            );
        }
    }
}

/// `VmRSS` of a process, in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The sum of a metric's samples (all label sets) in Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Thousands separated by commas.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
    use common::{CancelReason, Event, EventKind};
    use matcher::{Capacity, Engine};
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_every_cancel_names_an_older_kept_order_once() {
        let table = SymbolTable::default();
        let mut kept: HashMap<u64, (SymbolId, Account)> = HashMap::new();
        let mut client_ids = HashSet::new();
        let mut canceled = HashSet::new();
        for (n, step) in Flow::new(&table, 8, 7).take(200_000) {
            match step {
                Step::New { order, keep } => {
                    assert!(client_ids.insert(order.client_order_id), "client id reused at {n}");
                    if keep {
                        kept.insert(n, (order.symbol, order.account));
                    }
                }
                Step::Cancel { of, symbol, account } => {
                    assert!(n - of >= CANCEL_AFTER, "cancel {n} of {of}: within a chunk");
                    assert_eq!(kept.get(&of), Some(&(symbol, account)), "cancel {n} names no kept order");
                    assert!(canceled.insert(of), "order {of} canceled twice");
                }
            }
        }
        assert!(canceled.len() > 10_000, "cancels happen: {}", canceled.len());
    }

    /// The generated stream through the real engine, with exchange ids as Kafka would give them
    /// (a partition per symbol, offsets counting up): nothing is rejected, crossing pairs fill, the
    /// kept orders are canceled on request, and the book stays small.
    #[test]
    fn the_open_book_stays_bounded_on_the_real_engine() {
        let table = SymbolTable::default();
        let mut engine = Engine::new(&table, Capacity::default());
        let mut flow = Flow::new(&table, 8, 3);
        let mut offsets = [0u64; 3];
        let mut ids: HashMap<u64, OrderId> = HashMap::new();
        let (mut out, mut max_resting, mut fills, mut requested) = (Vec::<Event>::new(), 0, 0u64, 0u64);
        for _ in 0..150_000 {
            let (n, step) = flow.next().unwrap();
            let (symbol, kind) = match step {
                Step::New { order, .. } => (order.symbol, CommandKind::New(order)),
                Step::Cancel { of, symbol, account } => {
                    (symbol, CommandKind::Cancel(Cancel { order_id: ids.remove(&of).unwrap(), account }))
                }
            };
            let p = symbol.0 as usize;
            let id = OrderId::new(p as u16, offsets[p]).unwrap();
            offsets[p] += 1;
            if matches!(step, Step::New { keep: true, .. }) {
                ids.insert(n, id);
            }
            out.clear();
            engine.apply(&Command { id, ts: Timestamp(n), kind }, &mut out);
            for e in &out {
                match e.kind {
                    EventKind::Rejected { reason, .. } => panic!("command {n} rejected: {reason:?}"),
                    EventKind::Fill { .. } => fills += 1,
                    EventKind::Canceled { reason: CancelReason::Requested, .. } => requested += 1,
                    _ => {}
                }
            }
            max_resting = max_resting.max(engine.resting_orders());
        }
        engine.validate().unwrap();
        let c = flow.counts;
        assert_eq!(requested, c.cancels, "every cancel removed its order");
        assert_eq!(fills, (c.new - c.kept) / 2, "every crossing pair traded once");
        assert!(max_resting <= 500, "the open book reached {max_resting} orders");
        assert!(engine.resting_orders() >= 100, "orders do rest: {}", engine.resting_orders());
        assert_eq!(engine.resting_orders() as u64, c.kept - c.cancels);
    }

    #[test]
    fn checkpoints_take_the_baseline_and_the_end() {
        let args: Vec<String> = ["--orders", "200000", "--at", "100000"].map(String::from).to_vec();
        assert_eq!(flags(&args).unwrap().checkpoints, [50_000, 100_000, 200_000]);
        let args: Vec<String> = ["--orders", "1000", "--at", "5000"].map(String::from).to_vec();
        assert!(flags(&args).is_err());
        let args: Vec<String> = ["--orders", "200000"].map(String::from).to_vec();
        assert_eq!(flags(&args).unwrap().checkpoints, [50_000, 100_000, 200_000]);
        assert_eq!(flags(&[]).unwrap().checkpoints, [50_000, 100_000, 500_000, 1_000_000]);
    }

    #[test]
    fn metrics_are_summed_over_labels() {
        let text = "# HELP x\nmatcher_resting_orders{symbol=\"ABC\"} 3\nmatcher_resting_orders{symbol=\"DEF\"} 4\nmatcher_resting_orders_x 9\n";
        assert_eq!(metric_sum(text, "matcher_resting_orders"), 7.0);
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
