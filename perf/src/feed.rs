//! Feeding a matcher of the benchmarks' own: a minimal stack, a realistic command stream
//! produced straight to the `orders` topic, and the exact "caught up" wait. Shared by
//! `mem-bench` (memory against history) and `recovery-bench` (recovery time against log length).
//!
//! **The stack** ([`bench_plan`]): the `stack` crate's description (the one `./lab up` and the
//! integration tests use) cut down to the broker, Redis (no persistence) and the release matcher
//! beside the running executable, on free loopback ports in a fresh [`RunDir`]. The caller may
//! add flags or environment to the matcher ([`matcher_proc`]) before starting a [`Supervisor`]
//! with restarts off (a benchmark that kills the matcher wants it to stay down).
//!
//! **The flow** ([`Flow`]) keeps the open book bounded, as a real market does: over the default
//! symbol table and a few accounts, 70 % of episodes are a crossing pair (a GTC limit that rests,
//! then the opposite side from another account at the same price and quantity: both fill), 15 %
//! an IOC taker pair (a resting GTC maker, then an IOC from another account for more than it
//! holds: a fill and an unfilled remainder), 15 % a GTC order ten to fifty ticks away from the
//! market, canceled [`CANCEL_AFTER`] commands later by its exchange id (from its delivery report,
//! to its partition). About 300 orders rest at any time; every client order id is new; ~7 % of
//! the commands are cancels. Deterministic by seed.
//!
//! **The producer** ([`Feed`]): idempotent, `acks=all`, keyed by symbol, in chunks whose delivery
//! reports it awaits before the next (Tansu on sqlite fell over under an unbounded idempotent
//! load: DESIGN.md §1), never more than a given lag ahead of what the matcher has persisted. After
//! each chunk it sends the matcher a wake-up, as order-svc does.
//!
//! **Caught up** ([`Feed::wait_for_lag`] with 0): the matcher's consumer group's committed offsets
//! (read with `committed_offsets`, as the matcher itself reads them on start) reach the produced
//! end of every partition. The matcher commits an offset only after the events of every command
//! before it are in Redis and on the output topics, so this is exact.

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
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use stack::{Kind, Options, Plan, Ports, Proc, Supervisor};

use crate::stream::Rng;

// ---- the flow ----------------------------------------------------------------------------------

/// A resting order is canceled this many commands after it was produced: more than a chunk, so its
/// exchange id (from its delivery report) is known when the cancel is produced. Chunks are at most
/// this long.
pub const CANCEL_AFTER: u64 = 4_096;

/// Resting orders sit at least this many ticks from the market, so no crossing order reaches them.
const REST_AWAY: i64 = 10;

/// … and at most `REST_AWAY + REST_SPREAD - 1` ticks (inside every default symbol's band).
const REST_SPREAD: u64 = 40;

/// Crossing pairs trade within this many ticks of the reference price.
const JITTER: u64 = 5;

/// One command of the flow, before it has an exchange id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A new order; `keep`: it rests until a later [`Step::Cancel`] names it (its id is needed).
    New {
        /// The order.
        order: NewOrder,
        /// It rests until canceled.
        keep: bool,
    },
    /// Cancel the kept order produced as command `of`.
    Cancel {
        /// The command number of the kept order.
        of: u64,
        /// Its symbol.
        symbol: SymbolId,
        /// Its account (a cancel must come from the owner).
        account: Account,
    },
}

/// What the flow has made so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// New orders.
    pub new: u64,
    /// Of which IOC.
    pub ioc: u64,
    /// Of which kept resting until canceled.
    pub kept: u64,
    /// Cancels.
    pub cancels: u64,
}

/// The benchmarks' order flow: an endless, deterministic (by seed) iterator of `(command number,
/// step)`, numbered from 0. See the module doc for the mix.
pub struct Flow {
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
    /// What has been made so far.
    pub counts: Counts,
}

impl Flow {
    /// The flow over `table`'s symbols and `accounts` accounts (at least 2), seeded with `seed`.
    pub fn new(table: &SymbolTable, accounts: usize, seed: u64) -> Flow {
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

// ---- the stack ---------------------------------------------------------------------------------

/// A run directory under the system's temporary directory, removed when dropped unless kept.
pub struct RunDir {
    /// Where it is.
    pub path: PathBuf,
    /// Keep it (with the processes' logs) when dropped.
    pub keep: bool,
}

impl RunDir {
    /// Creates `<tmp>/trading-lab-<name>-<pid>`.
    pub fn create(name: &str, keep: bool) -> anyhow::Result<RunDir> {
        let path = std::env::temp_dir().join(format!("trading-lab-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir { path, keep })
    }
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

/// The plan of a benchmark's stack in `dir`: the broker, Redis (no persistence) and the matcher
/// (its snapshots in `dir/snapshots`), on free loopback ports. Fails if the release matcher is not
/// built.
pub fn bench_plan(dir: &Path) -> anyhow::Result<Plan> {
    let mut o = Options::native(dir, Ports::Free);
    (o.order_svcs, o.gateways, o.nginx_front, o.sim, o.auth) = (0, 0, false, false, false);
    (o.durable_redis, o.prometheus) = (false, false);
    let mut plan = Plan::build(&o)?;
    let matcher = matcher_proc(&mut plan)?;
    ensure!(
        matcher.program.exists(),
        "{} not built: cargo build --release -p matcher --bin matcher",
        matcher.program.display()
    );
    Ok(plan)
}

/// The matcher's description in `plan`, to add flags or environment before the start.
pub fn matcher_proc(plan: &mut Plan) -> anyhow::Result<&mut Proc> {
    plan.procs.iter_mut().find(|p| p.kind == Kind::Matcher).context("a matcher in the plan")
}

/// A benchmark binary's `main`: `-h`/`--help` prints `usage`; flags `parse` refuses exit 2 with
/// its message; `run` is handed the Ctrl-C/SIGTERM flag ([`on_signals`]), and its failure exits 1
/// with `name` and the error.
pub fn bench_main<F>(
    name: &str,
    usage: &str,
    parse: impl FnOnce(&[String]) -> Result<F, String>,
    run: impl FnOnce(&F, &AtomicBool) -> anyhow::Result<()>,
) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{usage}");
        return;
    }
    let flags = match parse(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = on_signals().and_then(|cancel| run(&flags, &cancel)) {
        eprintln!("{name}: {e:#}");
        std::process::exit(1);
    }
}

/// The stack benchmarks' flags: `--keep` alone (returned: keep the run directory), every other
/// flag followed by its value, handed to `set(name, value)`; a flag without a value is an error
/// with `usage`.
pub fn each_flag(
    args: &[String],
    usage: &str,
    mut set: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<bool, String> {
    let mut keep = false;
    let mut it = args.iter();
    while let Some(name) = it.next() {
        if name == "--keep" {
            keep = true;
            continue;
        }
        let value = it.next().ok_or(format!("{name} needs a value\n{usage}"))?;
        set(name, value)?;
    }
    Ok(keep)
}

/// Flag `flag`'s `value` as a comma-separated list of whole numbers (empty items skipped).
pub fn whole_numbers(flag: &str, value: &str, usage: &str) -> Result<Vec<u64>, String> {
    value.split(',').filter(|s| !s.is_empty()).map(|v| whole_number(flag, v, usage)).collect()
}

/// Flag `flag`'s `value` as a whole number (`_` separators allowed), or the error with `usage`.
pub fn whole_number(flag: &str, value: &str, usage: &str) -> Result<u64, String> {
    value
        .replace('_', "")
        .parse::<u64>()
        .map_err(|_| format!("{flag}: {value:?} is not a whole number\n{usage}"))
}

/// A flag set by SIGINT or SIGTERM: the benchmarks check it and stop their stack.
pub fn on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, cancel.clone())
            .with_context(|| format!("cannot handle signal {signal}"))?;
    }
    Ok(cancel)
}

// ---- the matcher's committed offsets -----------------------------------------------------------

/// Reads the matcher group's committed offsets on `orders` (it never joins the group nor commits):
/// what the matcher has persisted.
pub struct Committed {
    consumer: BaseConsumer,
    group: String,
    partitions: i32,
}

impl Committed {
    /// A reader for the matcher of `plan`.
    pub fn connect(plan: &Plan) -> anyhow::Result<Committed> {
        let matcher = plan.get("matcher").context("a matcher in the plan")?;
        let group = matcher.flag("--group").unwrap_or("matcher").to_owned();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &plan.kafka)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the offsets reader")?;
        let partitions = stack::plan::TOPICS.iter().find(|(t, _)| *t == "orders").map_or(1, |&(_, n)| n);
        Ok(Committed { consumer, group, partitions })
    }

    /// The committed offset per partition (0 before the first commit).
    pub fn offsets(&self) -> anyhow::Result<Vec<i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition("orders", p);
        }
        let got = self
            .consumer
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

    /// Commands on `orders` (up to each partition's end now) not yet committed, summed.
    pub fn behind_log_end(&self) -> anyhow::Result<u64> {
        let committed = self.offsets()?;
        let mut lag = 0;
        for (p, done) in committed.into_iter().enumerate() {
            let (_, high) = self.consumer.fetch_watermarks("orders", p as i32, Duration::from_secs(5))?;
            lag += (high - done).max(0) as u64;
        }
        Ok(lag)
    }
}

// ---- the producer ------------------------------------------------------------------------------

/// How [`Feed`] produces.
#[derive(Clone, Copy, Debug)]
pub struct FeedConfig {
    /// Commands a chunk (at most [`CANCEL_AFTER`]); each chunk's delivery reports are awaited.
    pub chunk: u64,
    /// Accounts in the flow (at least 2).
    pub accounts: usize,
    /// The flow's seed.
    pub seed: u64,
}

/// What the poll callback of [`Feed::wait_for_lag`] gets: the supervisor, commands produced so far,
/// commands produced and not yet persisted.
pub type OnPoll<'a> = &'a mut dyn FnMut(&Supervisor, u64, u64);

/// A benchmark's connections to its stack and the flow it produces. See the module doc.
pub struct Feed {
    producer: Producer,
    /// The matcher group's committed offsets.
    offsets: Committed,
    http: reqwest::blocking::Client,
    metrics_url: String,
    /// Wakes the matcher's dozing consumer when a chunk is in (as order-svc does).
    waker: Option<Waker>,
    table: SymbolTable,
    flow: Flow,
    chunk: u64,
    /// Commands produced (and delivered) so far.
    produced: u64,
    /// Per partition: the offset after the last delivered command.
    ends: Vec<i64>,
    /// Exchange ids of the kept orders not yet canceled, by command number.
    ids: HashMap<u64, OrderId>,
}

impl Feed {
    /// Connects to the broker and the matcher of `sup`'s plan.
    pub fn connect(sup: &Supervisor, config: &FeedConfig) -> anyhow::Result<Feed> {
        ensure!((1..=CANCEL_AFTER).contains(&config.chunk), "a chunk is 1..={CANCEL_AFTER} commands");
        let plan = sup.plan();
        let matcher = plan.get("matcher").context("a matcher in the plan")?;
        let mut kafka = ClientConfig::new();
        kafka
            .set("bootstrap.servers", &plan.kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", (2 * config.chunk + 1_000).to_string())
            .set("message.timeout.ms", "60000");
        let producer = Producer::create(&kafka).context("creating the producer")?;
        let offsets = Committed::connect(plan)?;
        let partitions = offsets.partitions;
        let waker = match matcher.flag("--wake-listen") {
            Some(addr) => Waker::new(&[addr.to_owned()])?,
            None => None,
        };
        let table = SymbolTable::default();
        Ok(Feed {
            producer,
            offsets,
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build()?,
            metrics_url: matcher.url("/metrics"),
            waker,
            flow: Flow::new(&table, config.accounts, config.seed),
            table,
            chunk: config.chunk,
            produced: 0,
            ends: vec![0; partitions as usize],
            ids: HashMap::new(),
        })
    }

    /// Commands produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// What the flow has made so far.
    pub fn counts(&self) -> Counts {
        self.flow.counts
    }

    /// Per partition of `orders`: the offset after the last command produced (the log's end).
    pub fn ends(&self) -> &[i64] {
        &self.ends
    }

    /// Produces until `target` commands are out, a chunk at a time, never more than `max_lag`
    /// ahead of what the matcher has persisted; `on_poll` is called while it waits. It does not
    /// wait for the last chunk to be persisted: [`Feed::wait_for_lag`] with 0 does.
    pub fn produce_until(
        &mut self,
        target: u64,
        sup: &mut Supervisor,
        max_lag: u64,
        cancel: &AtomicBool,
        timeout: Duration,
        on_poll: OnPoll<'_>,
    ) -> anyhow::Result<()> {
        while self.produced < target {
            self.wait_for_lag(sup, max_lag, cancel, timeout, on_poll)?;
            let n = self.chunk.min(target - self.produced);
            self.produce_chunk(n)?;
        }
        Ok(())
    }

    /// Produces the next `n` commands of the flow and waits for every delivery report.
    fn produce_chunk(&mut self, n: u64) -> anyhow::Result<()> {
        let mut pending: Vec<(u64, bool, DeliveryFuture)> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (seq, step) = self.flow.next().context("the flow is endless")?;
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
        self.produced += n;
        if let Some(w) = &self.waker {
            w.wake();
        }
        Ok(())
    }

    /// The matcher group's committed offset per partition (0 before its first commit).
    pub fn committed(&self) -> anyhow::Result<Vec<i64>> {
        self.offsets.offsets()
    }

    /// Produced but not yet persisted by the matcher, summed over the partitions.
    pub fn lag(&self) -> anyhow::Result<u64> {
        let committed = self.committed()?;
        Ok(self.ends.iter().zip(&committed).map(|(&e, &c)| (e - c).max(0) as u64).sum())
    }

    /// Waits until at most `max` produced commands are not yet persisted by the matcher (0: it has
    /// caught up), calling `on_poll` at every look (every 20 ms for 0, else 50 ms). Fails if the
    /// matcher exits, on `cancel`, and after `timeout`.
    pub fn wait_for_lag(
        &self,
        sup: &mut Supervisor,
        max: u64,
        cancel: &AtomicBool,
        timeout: Duration,
        on_poll: OnPoll<'_>,
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
            on_poll(sup, self.produced, lag);
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

    /// The matcher's `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.http.get(&self.metrics_url).send()?.error_for_status()?.text()?)
    }
}

// ---- progress and small helpers ----------------------------------------------------------------

/// A bar on a terminal; a line every 5 s otherwise.
pub struct Progress {
    /// The bar (hidden when stderr is not a terminal).
    pub bar: indicatif::ProgressBar,
    last: Instant,
    last_line: Instant,
}

impl Progress {
    /// A bar up to `total` commands, `what` after the count (e.g. "matched").
    pub fn new(total: u64, what: &str) -> anyhow::Result<Progress> {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "  {{elapsed:>4}} [{{wide_bar}}] {{pos}}/{{len}} {what}  {{msg}}"
            ))?
            .progress_chars("=> "),
        );
        Ok(Progress { bar, last: Instant::now(), last_line: Instant::now() })
    }

    /// True once a second.
    pub fn due(&mut self) -> bool {
        let due = self.last.elapsed() >= Duration::from_secs(1);
        if due {
            self.last = Instant::now();
        }
        due
    }

    /// Moves the bar to `done` with `status` (or prints a line, every 5 s, without a terminal).
    pub fn show(&mut self, done: u64, status: String) {
        self.bar.set_position(done);
        if !self.bar.is_hidden() {
            self.bar.set_message(status);
        } else if self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            eprintln!(
                "  {:>5.0} s  matched {done}/{}  {status}",
                self.bar.elapsed().as_secs_f64(),
                self.bar.length().unwrap_or(0)
            );
        }
    }

    /// Prints `line` above the bar.
    pub fn say(&self, line: &str) {
        self.bar.suspend(|| eprintln!("  {line}"));
    }
}

/// `VmRSS` of a process, in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The summed `VmRSS` of every process in process group `pgid`, in kB: a supervised process and
/// its children (the supervisor makes each process lead its own group, so for nginx this is the
/// master and its workers; pages they share are counted in each). `None` if no process of the
/// group has a resident size (the group is gone).
pub fn group_rss_kb(pgid: u32) -> Option<u64> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if stat_pgrp(&stat) == Some(pgid) {
            if let Some(kb) = rss_kb(pid) {
                *total.get_or_insert(0) += kb;
            }
        }
    }
    total
}

/// The process group of a `/proc/<pid>/stat` line (the fields after the command name, which is in
/// parentheses and may hold spaces and parentheses itself: state, ppid, pgrp, …).
fn stat_pgrp(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
}

/// The sum of a metric's samples (all label sets) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Thousands separated by commas.
pub fn thousands(n: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use common::{CancelReason, Event, EventKind};
    use matcher::{Capacity, Engine};
    use std::collections::HashSet;

    #[test]
    fn flags_come_in_pairs_but_keep_and_lists_are_whole_numbers() {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let mut seen = Vec::new();
        let keep = each_flag(&args("--a 1 --keep --b x"), "U", |n, v| {
            seen.push(format!("{n}={v}"));
            Ok(())
        });
        assert_eq!((keep, seen), (Ok(true), vec!["--a=1".to_owned(), "--b=x".to_owned()]));
        assert_eq!(each_flag(&args("--a 1"), "U", |_, _| Ok(())), Ok(false));
        assert_eq!(each_flag(&args("--a"), "U", |_, _| Ok(())), Err("--a needs a value\nU".to_owned()));
        assert_eq!(each_flag(&args("--a 1"), "U", |n, _| Err(format!("no {n}"))), Err("no --a".to_owned()));
        assert_eq!(whole_numbers("--at", "1_000,,5", "U"), Ok(vec![1_000, 5]));
        assert!(whole_numbers("--at", "1,x", "U")
            .unwrap_err()
            .starts_with("--at: \"x\" is not a whole number"));
    }

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
    fn metrics_are_summed_over_labels() {
        let text = "# HELP x\nmatcher_resting_orders{symbol=\"ABC\"} 3\nmatcher_resting_orders{symbol=\"DEF\"} 4\nmatcher_resting_orders_x 9\n";
        assert_eq!(metric_sum(text, "matcher_resting_orders"), 7.0);
        assert_eq!(metric_sum(text, "matcher_absent"), 0.0);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn a_process_group_is_read_from_stat_and_summed() {
        assert_eq!(stat_pgrp("4242 (nginx) S 1 4240 4240 0 -1 4194560"), Some(4240));
        assert_eq!(stat_pgrp("7 (a) b (c) R 1 9 9 0"), Some(9), "a command name with ') '");
        assert_eq!(stat_pgrp("garbage"), None);
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let group = stat_pgrp(&stat).unwrap();
        assert!(group_rss_kb(group).unwrap() >= rss_kb(me).unwrap(), "the group holds this process");
    }
}
