//! The fault harness (issue 11): a steady, two-sided order flow through nginx while, one after
//! another, the matcher, a gateway, an order-svc and nginx are SIGKILLed and Redis and the broker
//! are stopped for a while. After each fault the harness checks what the clients were told
//! against what the exchange holds, and [`run`] returns one [`Row`] per fault. `cargo test -p
//! itest --test faults` runs the short form ([`Config::short`]); the `fault-harness` binary the
//! longer one ([`Config::default`], flags for each knob).
//!
//! # The stack
//! The whole native stack ([`Stack::with_restarts`]): broker (Tansu on sqlite, durable), Redis
//! (durable, as `./lab up` runs it: AOF and RDB in the run directory), the matcher, two order-svc,
//! two gateways, nginx, accounts on. The supervisor restarts what dies with `./lab up`'s backoff
//! ([`Restart::default`]: 0.5 s, 1 s, …) each time the harness calls [`Supervisor::tick`], which
//! it does every 100 ms while it waits — as `lab up` does.
//!
//! With [`Config::matchers`] at 2 (`./lab up --matchers 2`), `matcher` and `matcher-2` share the
//! `orders` partitions by leases in Redis (`--share-partitions`, `--lease-ms` [`LEASE_MS`],
//! `--snapshot-every` [`SNAPSHOT_EVERY`]); the gateways, nginx's read path and the checks read
//! from `matcher` (its front reads Redis, so it answers for every partition).
//!
//! # The flow
//! [`Config::senders`] threads, one signed-up user each, send through nginx's `/api/v1/orders`
//! with their token as `Bearer`, [`Config::rate`] new orders a second in all: even threads sell,
//! odd ones buy (so no order meets its own account's), at the reference price −3…+2 ticks (sells)
//! or −2…+3 (buys), 1–5 lots, a tenth IOC, over `ABC`, `DEF` and `XYZ` — most trade, some rest.
//! Every eighth slot instead reads one of the thread's resting orders (`GET`) and cancels it
//! (`DELETE`) if it is still open. Every answer is recorded: a `202` with the exchange order id is
//! an ack; a `4xx` with a documented code a refusal (only `429` is one a valid order can earn);
//! `502`/`503`/`504` with a documented code, or no answer at all, an error — whose outcome is
//! unknown: such an order is never counted lost, and if it is in the log it is checked like any
//! other (the table shows how many were: "errored (N logged)").
//!
//! # The faults
//! Each runs with the flow going before ([`Config::settle`]), during, and after recovery
//! ([`Config::settle`] again): [`Fault::KillMatcher`], [`Fault::KillGateway`],
//! [`Fault::KillOrderSvc`], [`Fault::KillNginx`] SIGKILL the process's group and leave the
//! restart to the supervisor. [`Fault::StopRedis`] and [`Fault::StopBroker`] stop the process
//! (SIGTERM, SIGKILL after 5 s) and start it again [`Config::outage`] later: a real outage —
//! connections refused and dropped, every client reconnecting — that destroys nothing, because
//! both keep their data on disk (Tansu's sqlite; Redis's AOF, flushed by its SIGTERM shutdown).
//! [`Fault::PauseRedis`] and [`Fault::PauseBroker`] (SIGSTOP, SIGCONT) are the other kind of
//! outage — a process that hangs with its connections open — for runs that ask for them.
//!
//! With two matchers, [`Fault::KillMatcher2`] SIGKILLs `matcher-2` (and [`Fault::KillMatcher`]
//! `matcher`) once each owns its share of the partitions (`matcher_owns_partition{partition}` on
//! each one's `/metrics`): the killed one's partitions stop matching until its leases expire and
//! a matcher — the other, or itself restarted — takes them over from the newest snapshot and the
//! log. The row's notes say who owned each partition from the kill until they were shared again
//! (which must happen, else a problem), and its *time to recover* counts only orders on the
//! killed matcher's partitions.
//!
//! # Recovery
//! Two times, both from the fault (a kill) or from the restart (a stop or pause: the outage itself
//! is not counted; a stop's row says how long it was down, SIGTERM's grace included): *time to
//! recover* runs to the first order sent after that moment
//! which was both acknowledged (`202` received) and matched (its `persisted` hop, the matcher's
//! clock: every process runs on this machine); *all ready* runs until every process of the stack
//! passes its readiness probe again (a killed one restarted). An error is allowed from the fault
//! until the later of the two plus [`GRACE`]; any other is a wrong answer.
//!
//! # The checks
//! Once the flow is stopped and the matcher has committed every offset of `orders` (it commits
//! only what it has persisted), the harness reads the whole `orders` topic, decodes each message
//! with `decode_command` (its id is `OrderId::new(partition, offset)`), applies them partition
//! after partition to a fresh [`matcher::Engine`] — a symbol lives in one partition, so that order
//! gives the same books as any interleaving — and checks:
//! - **lost**: every order ever acknowledged is in the log at the position its id names (same
//!   account and client id), has an `order:` hash in Redis, and (this fault's) is on the matcher
//!   front (`GET /api/v1/orders/{id}`) resting, partially filled, filled, canceled or rejected;
//! - **duplicate trades**: each trade id once on `trades` (every partition, every message), and no
//!   order with more fills in its `fills:` hash than distinct trades naming it on the topic;
//! - **fills**: per order, the fills' quantities sum to its `filled_qty` and at most its quantity;
//! - **book = log**: every order of the log has the rebuilt status, filled and open quantity (and
//!   reject reason) in Redis and the rebuilt trade ids in its `fills:` hash; the topic holds exactly
//!   the rebuilt trades; each symbol's depth on the matcher front (`GET
//!   /api/v1/book/{symbol}?depth=50`) equals the rebuilt book's at the same level sequence; each
//!   account's `open:` set is the rebuilt book's resting orders of that account;
//! - **wrong answers**: none (see *Recovery*).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use common::envelope::decode_command;
use common::{CommandKind, Decimal, EventKind, OrderId, Qty, Side, SymbolId, SymbolTable, TradeId};
use matcher::{Capacity, Engine};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use crate::{http, Kind, Restart, Service, Signal, Stack, Supervisor};

/// How long after recovery an error is still the fault's: requests that were in flight.
pub const GRACE: Duration = Duration::from_secs(2);

/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// With shared partitions: the matchers' lease time (`--lease-ms`, the default, said explicitly).
pub const LEASE_MS: u64 = 3000;

/// With shared partitions: a snapshot every this many commands (`--snapshot-every`).
pub const SNAPSHOT_EVERY: u64 = 50;

/// The symbols the flow trades (the default table's).
const SYMBOLS: [&str; 3] = ["ABC", "DEF", "XYZ"];

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the matcher; the supervisor restarts it (it replays the log from its snapshot).
    /// With two matchers ([`Config::matchers`]) it is `matcher`, the one the gateways read from.
    KillMatcher,
    /// SIGKILL `matcher-2` of a stack with two matchers ([`Config::matchers`]), once each owns
    /// its share of the `orders` partitions: its partitions match again when its leases expire,
    /// on the other matcher or on itself restarted.
    KillMatcher2,
    /// SIGKILL `gateway-1`; nginx sends to `gateway-2` meanwhile.
    KillGateway,
    /// SIGKILL `order-svc-1`; the gateways send to `order-svc-2` meanwhile.
    KillOrderSvc,
    /// SIGKILL nginx, the one public entry.
    KillNginx,
    /// Stop Redis (SIGTERM: it writes its data) and start it again [`Config::outage`] later.
    StopRedis,
    /// Stop the broker (SIGTERM; sqlite keeps the log) and start it again [`Config::outage`] later.
    StopBroker,
    /// SIGSTOP Redis, SIGCONT [`Config::outage`] later: a hang, connections left open.
    PauseRedis,
    /// SIGSTOP the broker, SIGCONT [`Config::outage`] later.
    PauseBroker,
}

impl Fault {
    /// The six faults of issue 11, in its order.
    pub const ISSUE: [Fault; 6] = [
        Fault::KillMatcher,
        Fault::KillGateway,
        Fault::KillOrderSvc,
        Fault::KillNginx,
        Fault::StopRedis,
        Fault::StopBroker,
    ];

    /// Every fault.
    pub const ALL: [Fault; 9] = [
        Fault::KillMatcher,
        Fault::KillMatcher2,
        Fault::KillGateway,
        Fault::KillOrderSvc,
        Fault::KillNginx,
        Fault::StopRedis,
        Fault::StopBroker,
        Fault::PauseRedis,
        Fault::PauseBroker,
    ];

    /// Issue 11's faults for a stack of `matchers` matchers: [`Fault::ISSUE`], and with two or
    /// more, [`Fault::KillMatcher2`] after the first matcher's kill.
    pub fn issue(matchers: usize) -> Vec<Fault> {
        let mut faults = Fault::ISSUE.to_vec();
        if matchers >= 2 {
            faults.insert(1, Fault::KillMatcher2);
        }
        faults
    }

    /// A SIGKILL the supervisor recovers from.
    pub fn is_kill(self) -> bool {
        matches!(
            self,
            Fault::KillMatcher
                | Fault::KillMatcher2
                | Fault::KillGateway
                | Fault::KillOrderSvc
                | Fault::KillNginx
        )
    }

    /// A matcher's SIGKILL.
    pub fn is_matcher_kill(self) -> bool {
        matches!(self, Fault::KillMatcher | Fault::KillMatcher2)
    }

    /// The process it hits.
    pub fn process(self) -> &'static str {
        match self {
            Fault::KillMatcher => "matcher",
            Fault::KillMatcher2 => "matcher-2",
            Fault::KillGateway => "gateway-1",
            Fault::KillOrderSvc => "order-svc-1",
            Fault::KillNginx => "nginx",
            Fault::StopRedis | Fault::PauseRedis => "redis",
            Fault::StopBroker | Fault::PauseBroker => "broker",
        }
    }

    /// Its name on the command line: `kill-matcher`, `stop-redis`, `pause-broker`, …
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillMatcher => "kill-matcher",
            Fault::KillMatcher2 => "kill-matcher-2",
            Fault::KillGateway => "kill-gateway",
            Fault::KillOrderSvc => "kill-order-svc",
            Fault::KillNginx => "kill-nginx",
            Fault::StopRedis => "stop-redis",
            Fault::StopBroker => "stop-broker",
            Fault::PauseRedis => "pause-redis",
            Fault::PauseBroker => "pause-broker",
        }
    }

    /// The fault named `name` (see [`Fault::name`]).
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }

    /// How it reads in the table.
    fn label(self, config: &Config) -> String {
        let secs = config.outage.as_secs_f64();
        match self {
            Fault::KillMatcher | Fault::KillMatcher2 if config.matchers > 1 => {
                let n = if config.matchers == 2 { "two".to_owned() } else { config.matchers.to_string() };
                format!("{} SIGKILL ({n} matchers)", self.process())
            }
            Fault::KillMatcher
            | Fault::KillMatcher2
            | Fault::KillGateway
            | Fault::KillOrderSvc
            | Fault::KillNginx => format!("{} SIGKILL", self.process()),
            Fault::StopRedis | Fault::StopBroker => format!("{} stopped {secs:.0} s", self.process()),
            Fault::PauseRedis | Fault::PauseBroker => format!("{} SIGSTOP {secs:.0} s", self.process()),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// New orders a second, all senders together.
    pub rate: f64,
    /// Sender threads, one user each.
    pub senders: usize,
    /// How long the flow runs before each fault, and again after recovery.
    pub settle: Duration,
    /// How long Redis or the broker stays down.
    pub outage: Duration,
    /// How long the stack may take to be ready again after a fault; past it, the run stops.
    pub recover_timeout: Duration,
    /// The faults, in order.
    pub faults: Vec<Fault>,
    /// Matchers in the stack (1: one owns every partition). With more, they share the `orders`
    /// partitions by leases in Redis (`--share-partitions`, `--lease-ms` [`LEASE_MS`], and a
    /// snapshot every [`SNAPSHOT_EVERY`] commands, so a partition taken over has one to start
    /// from); `matcher` is the one the gateways and the checks read from.
    pub matchers: usize,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Where to copy the stack's logs when the run ends (the run directory is removed).
    pub keep_logs: Option<std::path::PathBuf>,
}

impl Config {
    /// The short form CI runs: each fault a few seconds.
    pub fn short() -> Config {
        Config {
            rate: 60.0,
            senders: 4,
            settle: Duration::from_secs(2),
            outage: Duration::from_secs(3),
            recover_timeout: Duration::from_secs(90),
            faults: Fault::ISSUE.to_vec(),
            matchers: 1,
            progress: true,
            keep_logs: None,
        }
    }
}

impl Default for Config {
    /// The longer run: 80 orders/s, 10 s of flow around each fault, 10 s outages.
    fn default() -> Config {
        Config {
            rate: 80.0,
            settle: Duration::from_secs(10),
            outage: Duration::from_secs(10),
            recover_timeout: Duration::from_secs(180),
            ..Config::short()
        }
    }
}

/// One fault's outcome: a row of the table.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// The fault, as the table shows it.
    pub fault: String,
    /// New orders sent while this fault's flow ran.
    pub sent: usize,
    /// Of those, acknowledged (`202` with an exchange order id).
    pub acked: usize,
    /// Refused with a documented `4xx`.
    pub rejected: usize,
    /// `502`/`503`/`504`, no answer, or a wrong one: the outcome unknown.
    pub errored: usize,
    /// Errored orders that are in the log nonetheless (checked like any other).
    pub errored_logged: usize,
    /// Acknowledged orders (of any fault so far) first found missing after this one.
    pub lost: usize,
    /// Trades first found twice after this fault (on the topic, or more fills in Redis than
    /// trades on the topic).
    pub duplicate_trades: usize,
    /// Orders whose fills add up to more than their quantity.
    pub overfilled: usize,
    /// Answers no client should get: undocumented, a refusal of a valid order, or an error
    /// outside the fault's window.
    pub wrong: usize,
    /// Cancels acknowledged.
    pub cancels: usize,
    /// From the fault (kill) or the restart (stop, pause) to the first order sent after it that
    /// was acknowledged and matched.
    pub recovered: Option<Duration>,
    /// From the same moment to every process ready again.
    pub ready: Option<Duration>,
    /// The live books and orders equal the ones rebuilt from the log.
    pub book_matches: bool,
    /// Every invariant that broke, for a person to read.
    pub problems: Vec<String>,
    /// What else happened (other processes the supervisor restarted, …).
    pub notes: Vec<String>,
}

impl Row {
    /// True if every invariant held.
    pub fn holds(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every fault's row.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// One per fault, in the order run.
    pub rows: Vec<Row>,
    /// Faults not run because an earlier one left the stack broken.
    pub skipped: Vec<String>,
}

impl Table {
    /// True if every invariant held for every fault and none was skipped.
    pub fn holds(&self) -> bool {
        self.skipped.is_empty() && self.rows.iter().all(Row::holds)
    }

    /// Every problem, prefixed with its fault.
    pub fn problems(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| r.problems.iter().map(move |p| format!("{}: {p}", r.fault)))
            .collect();
        all.extend(self.skipped.iter().map(|f| format!("{f}: not run (the stack did not recover)")));
        all
    }

    /// Every note, prefixed with its fault.
    pub fn notes(&self) -> Vec<String> {
        self.rows.iter().flat_map(|r| r.notes.iter().map(move |n| format!("{}: {n}", r.fault))).collect()
    }
}

impl fmt::Display for Table {
    /// The markdown table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| fault | orders sent | acked | rejected | errored | lost | duplicate trades | time to recover (s) | wrong answers | book = log | all ready (s) |"
        )?;
        writeln!(f, "|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|--:|")?;
        let secs = |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{:.2}", d.as_secs_f64()));
        for r in &self.rows {
            let errored = if r.errored_logged > 0 {
                format!("{} ({} logged)", r.errored, r.errored_logged)
            } else {
                r.errored.to_string()
            };
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.fault,
                r.sent,
                r.acked,
                r.rejected,
                errored,
                r.lost,
                r.duplicate_trades,
                secs(r.recovered),
                r.wrong,
                if r.book_matches { "yes" } else { "**no**" },
                secs(r.ready),
            )?;
        }
        for s in &self.skipped {
            writeln!(f, "| {s} | not run | | | | | | | | | |")?;
        }
        Ok(())
    }
}

/// Starts the stack, signs the users up, runs every fault of `config` in turn and checks after
/// each. An error means the harness itself could not go on (the stack did not start, the broker
/// cannot be read); a broken invariant is a row's problem.
pub fn run(config: &Config) -> anyhow::Result<Table> {
    anyhow::ensure!(config.senders >= 2 && config.rate > 0.0, "two senders at least, and a rate");
    anyhow::ensure!(config.matchers >= 1, "one matcher at least");
    if let Some(f) = config.faults.iter().find(|f| **f == Fault::KillMatcher2 && config.matchers < 2) {
        bail!("{} needs two matchers at least (--matchers 2)", f.name());
    }
    let mut h = Harness::start(config)?;
    let mut table = Table::default();
    let mut result = Ok(());
    for (n, &fault) in config.faults.iter().enumerate() {
        let row = match h.phase(n, fault) {
            Ok(row) => row,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let broken = row.ready.is_none();
        table.rows.push(row);
        if broken {
            table.skipped = config.faults[n + 1..].iter().map(|f| f.label(config)).collect();
            break;
        }
    }
    if let Some(to) = &config.keep_logs {
        match keep_logs(h.stack.dir(), to) {
            Ok(()) => h.say(&format!("logs copied to {}", to.display())),
            Err(e) => h.say(&format!("could not copy the logs to {}: {e:#}", to.display())),
        }
    }
    result.map(|()| table)
}

/// Copies the stack's logs (`*.log`, nginx's error log) from `dir` to `to`.
fn keep_logs(dir: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(dir)?.chain(std::fs::read_dir(dir.join("nginx"))?) {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            std::fs::copy(&path, to.join(path.file_name().unwrap_or_default()))?;
        }
    }
    Ok(())
}

/// The running harness: the stack, the users, and what was acknowledged so far.
struct Harness<'c> {
    config: &'c Config,
    stack: Stack,
    /// nginx with each sender's token.
    users: Vec<Service>,
    /// Each sender's user (its account).
    names: Vec<String>,
    table: SymbolTable,
    /// Every order acknowledged so far: id → (account, client order id).
    acked: BTreeMap<OrderId, (String, String)>,
    /// Acknowledged orders found missing by an earlier check.
    lost: HashSet<OrderId>,
    /// Duplicate trades found by the last check.
    duplicates: usize,
    started: Instant,
    /// For the matchers' `/metrics` (who owns which partition), with a short timeout.
    probe: reqwest::blocking::Client,
}

impl<'c> Harness<'c> {
    fn start(config: &'c Config) -> anyhow::Result<Harness<'c>> {
        let started = Instant::now();
        let stack = Stack::with_restarts(
            Some(Restart::default()),
            |o| {
                o.durable_redis = true;
                o.order_svcs = 2;
                o.gateways = 2;
                o.nginx_front = true;
                o.auth = true;
                o.matchers = config.matchers;
            },
            |p| {
                if config.matchers > 1 {
                    for m in p.procs.iter_mut().filter(|p| p.kind == Kind::Matcher) {
                        let (lease, every) = (LEASE_MS.to_string(), SNAPSHOT_EVERY.to_string());
                        m.args.extend(["--lease-ms".to_owned(), lease, "--snapshot-every".to_owned(), every]);
                    }
                }
            },
        );
        let names: Vec<String> = (0..config.senders).map(|i| format!("fault-user-{i}")).collect();
        let users = names.iter().map(|n| stack.as_user("nginx", n)).collect();
        let mut h = Harness {
            config,
            stack,
            users,
            names,
            table: SymbolTable::default(),
            acked: BTreeMap::new(),
            lost: HashSet::new(),
            duplicates: 0,
            started,
            probe: reqwest::blocking::Client::builder().timeout(Duration::from_secs(1)).build()?,
        };
        h.say(&format!("stack up in {}", h.stack.dir().display()));
        if config.matchers > 1 {
            // The second matcher takes its share from the first a moment after both are up.
            match h.owners_settled(Duration::from_secs(60)) {
                Ok(o) => h.say(&format!("the matchers share the partitions: {}", show_owners(&o))),
                Err(o) => h.say(&format!("the partitions are not shared after 60 s: {}", show_owners(&o))),
            }
        }
        Ok(h)
    }

    fn say(&self, what: &str) {
        if self.config.progress {
            eprintln!("[fault-harness {:6.1} s] {what}", self.started.elapsed().as_secs_f64());
        }
    }

    fn sup(&mut self) -> &mut Supervisor {
        &mut self.stack.sup
    }

    /// Waits `d`, letting the supervisor reap and restart every 100 ms.
    fn idle(&mut self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            self.sup().tick();
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(100)));
        }
    }

    /// Names of the processes not ready now.
    fn not_ready(&self) -> Vec<String> {
        let plan = self.stack.sup.plan();
        plan.procs
            .iter()
            .filter(|p| !stack::probe::passes(&p.ready, p.port))
            .map(|p| p.name.clone())
            .collect()
    }

    /// Restarts so far, by process.
    fn restarts(&self) -> HashMap<String, u32> {
        self.stack.sup.state("").procs.into_iter().map(|p| (p.name, p.restarts)).collect()
    }

    /// Who owns each `orders` partition, by each matcher's `matcher_owns_partition{partition}`
    /// (a matcher that does not answer owns nothing).
    fn owners(&self) -> Owners {
        let n = partitions("orders") as usize;
        let mut owners = vec![Vec::new(); n];
        for m in self.stack.all(Kind::Matcher) {
            let text = self.probe.get(m.url("/metrics")).send().and_then(|r| r.text());
            let Ok(text) = text else { continue };
            for line in text.lines().filter(|l| l.starts_with("matcher_owns_partition{")) {
                let p = line.split("partition=\"").nth(1).and_then(|r| r.split('"').next());
                let Some(p) = p.and_then(|p| p.parse::<usize>().ok()).filter(|&p| p < n) else { continue };
                if line.rsplit(' ').next() == Some("1") {
                    owners[p].push(m.name.clone());
                }
            }
        }
        owners
    }

    /// Waits (the supervisor ticking) until the partitions are [`settled`]: their owners, or
    /// `Err` with the last seen after `timeout`.
    fn owners_settled(&mut self, timeout: Duration) -> Result<Owners, Owners> {
        let deadline = Instant::now() + timeout;
        loop {
            self.sup().tick();
            let owners = self.owners();
            if settled(&owners, self.config.matchers) {
                return Ok(owners);
            }
            if Instant::now() > deadline {
                return Err(owners);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One fault with the flow around it, then the checks.
    fn phase(&mut self, n: usize, fault: Fault) -> anyhow::Result<Row> {
        let label = fault.label(self.config);
        let name = fault.process();
        let mut row = Row { fault: label.clone(), ..Row::default() };
        let restarts_before = self.restarts();
        self.say(&format!("{label}: flow for {:?} first", self.config.settle));
        let flow = Flow::start(n, &self.users, self.config, &self.table);
        self.idle(self.config.settle);

        // Matchers sharing the partitions: kill one only once each owns its share, and time the
        // recovery by the orders of the partitions it owned (the others' never stopped).
        let sharing = fault.is_matcher_kill() && self.config.matchers > 1;
        let mut before = None;
        let mut victim: Option<Vec<u16>> = None;
        if sharing {
            let owners = match self.owners_settled(Duration::from_secs(30)) {
                Ok(o) => o,
                Err(o) => {
                    row.notes.push(format!(
                        "the partitions were not settled before the kill: {}",
                        show_owners(&o)
                    ));
                    o
                }
            };
            let mine: Vec<u16> =
                (0..owners.len() as u16).filter(|&p| owners[p as usize].iter().any(|m| m == name)).collect();
            if mine.is_empty() {
                row.notes.push(format!("{name} owned no partition when it was killed"));
            } else {
                victim = Some(mine);
            }
            before = Some(owners);
        }

        let pid_before = self.stack.sup.pid(name);
        let fault_at = Instant::now();
        let mut timeline = before.map(|b| Timeline::new(fault_at, b));
        match fault {
            Fault::KillMatcher
            | Fault::KillMatcher2
            | Fault::KillGateway
            | Fault::KillOrderSvc
            | Fault::KillNginx => {
                self.stack.kill(name);
            }
            Fault::StopRedis | Fault::StopBroker => {
                match self.sup().terminate(name, STOP_GRACE) {
                    Ok(Some(_)) => {}
                    Ok(None) => row
                        .notes
                        .push(format!("{name} did not stop on SIGTERM within {STOP_GRACE:?}: killed")),
                    Err(e) => row.problems.push(format!("{name} could not be stopped: {e:#}")),
                }
                self.idle(self.config.outage);
                if let Err(e) = self.sup().start(name) {
                    row.problems.push(format!("{name} did not start again: {e:#}"));
                }
                // What it really was: a stop that waits out the grace period lasts longer.
                row.fault = format!("{name} stopped (down {:.1} s)", fault_at.elapsed().as_secs_f64());
            }
            Fault::PauseRedis | Fault::PauseBroker => {
                self.stack.signal(name, Signal::SIGSTOP);
                self.idle(self.config.outage);
                self.stack.signal(name, Signal::SIGCONT);
            }
        }
        // Recovery is timed from here: the kill, or the end of the imposed outage.
        let (from, from_ns) = (Instant::now(), now_ns());
        self.say(&format!("{label}: injected; waiting for every process to be ready"));
        let deadline = from + self.config.recover_timeout;
        let restarted =
            |h: &Harness| !fault.is_kill() || h.stack.sup.pid(name).is_some_and(|p| Some(p) != pid_before);
        let ready_at = loop {
            self.sup().tick();
            if let Some(t) = timeline.as_mut() {
                t.see(self.owners());
            }
            if restarted(self) && self.not_ready().is_empty() {
                break Some(Instant::now());
            }
            if Instant::now() > deadline {
                let waiting = self.not_ready().join(", ");
                row.problems.push(format!(
                    "not ready {:?} after the fault: {waiting}; {name}'s log ends:\n{}",
                    self.config.recover_timeout,
                    self.stack.tail(name)
                ));
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        row.ready = ready_at.map(|t| t - from);
        if let (Some(t), Some(_)) = (timeline.as_mut(), ready_at) {
            // The killed matcher is back: the partitions are shared again.
            let until = deadline.max(Instant::now() + Duration::from_secs(30));
            let shared = loop {
                self.sup().tick();
                let owners = self.owners();
                let done = settled(&owners, self.config.matchers);
                t.see(owners);
                if done {
                    break Some(Instant::now());
                }
                if Instant::now() > until {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            row.notes.push(format!("owners: {t}"));
            match shared {
                Some(at) => row.notes.push(format!(
                    "the partitions were shared again {:.2} s after the kill",
                    (at - fault_at).as_secs_f64()
                )),
                None => {
                    let tails: Vec<String> = self
                        .stack
                        .all(Kind::Matcher)
                        .iter()
                        .map(|m| format!("---- {}:\n{}", m.name, self.stack.tail(&m.name)))
                        .collect();
                    row.problems.push(format!(
                        "the partitions were not shared again {:.0} s after the kill: {}\n{}",
                        (Instant::now() - fault_at).as_secs_f64(),
                        show_owners(&t.last),
                        tails.join("\n")
                    ));
                }
            }
        }
        let ready = row.ready.map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
        self.say(&format!("{label}: ready again after {ready}; flow for {:?} more", self.config.settle));
        self.idle(self.config.settle);
        let calls = flow.stop();
        self.say(&format!("{label}: flow stopped ({} requests); draining", calls.len()));
        for (proc, n) in self.restarts() {
            let more = n - restarts_before.get(&proc).copied().unwrap_or(0);
            let expected = u32::from(proc == name && fault.is_kill());
            if more > expected {
                row.notes.push(format!("the supervisor restarted {proc} {more}× (expected {expected})"));
            }
        }
        if let Some(slow) = calls.iter().max_by_key(|c| c.done - c.sent) {
            let kind = match slow.kind {
                CallKind::New(_) => "POST",
                CallKind::Read(_) => "GET",
                CallKind::Cancel(_) => "DELETE",
            };
            row.notes.push(format!(
                "slowest answer {:.2} s ({kind} sent at {:+.2} s from the fault)",
                (slow.done - slow.sent).as_secs_f64(),
                signed_secs(slow.sent, fault_at)
            ));
        }
        if ready_at.is_none() {
            tally(&mut row, &calls, None);
            return Ok(row);
        }

        // Drained: the matcher has committed (so persisted) every command of the log.
        if let Err(e) = self.drain() {
            row.problems.push(format!("{e:#}; the matcher's log ends:\n{}", self.stack.tail("matcher")));
        }
        let orders = self.front_orders(&calls, &mut row)?;
        row.recovered = recovered(&calls, &orders, from, from_ns, victim.as_deref());
        if row.recovered.is_none() {
            let of = victim.as_ref().map_or(String::new(), |v| format!(" (on partitions {v:?})"));
            row.problems.push(format!("no order sent after the fault{of} was acknowledged and matched"));
        }
        let window_end = from + row.recovered.unwrap_or_default().max(row.ready.unwrap_or_default()) + GRACE;
        tally(&mut row, &calls, Some((fault_at, window_end)));
        self.check(&mut row, &calls)?;
        self.say(&format!(
            "{label}: checked: {} sent, {} acked, lost {}, duplicates {}, wrong {}, book {}",
            row.sent,
            row.acked,
            row.lost,
            row.duplicate_trades,
            row.wrong,
            if row.book_matches { "= log" } else { "≠ log" }
        ));
        Ok(row)
    }

    /// Waits until the matcher's committed offsets reach the end of every `orders` partition.
    fn drain(&mut self) -> anyhow::Result<()> {
        // A write whose client gave up may still be on its way to the broker for a moment.
        self.idle(Duration::from_secs(1));
        let kafka = self.stack.kafka();
        let group =
            self.stack.sup.proc("matcher").and_then(|m| m.flag("--group")).unwrap_or("matcher").to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (ends, done) =
                (ends(&kafka, "orders", partitions("orders")), committed(&kafka, &group, "orders"));
            if let (Ok(ends), Ok(done)) = (&ends, &done) {
                if ends == done {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the matcher did not commit the whole log within 60 s: log ends {ends:?}, committed {done:?}");
            }
            self.idle(Duration::from_millis(200));
        }
    }

    /// This fault's acknowledged orders as the matcher front has them; the ones it does not have
    /// are lost.
    fn front_orders(&mut self, calls: &[Call], row: &mut Row) -> anyhow::Result<HashMap<OrderId, Value>> {
        let front = self.stack.svc("matcher");
        let client = http();
        let mut got = HashMap::new();
        for call in calls {
            let (CallKind::New(new), Answer::Ok(v)) = (&call.kind, &call.answer) else { continue };
            let Some(id) = v["order_id"].as_str().and_then(|s| s.parse::<u64>().ok()).map(OrderId) else {
                continue;
            };
            self.acked.insert(id, (self.names[new.sender].clone(), new.client.clone()));
            let r =
                client.get(front.url(&format!("/api/v1/orders/{id}"))).send().context("the matcher front")?;
            match r.status().as_u16() {
                200 => {
                    let o: Value = r.json().context("an order's JSON")?;
                    let status = o["status"].as_str().unwrap_or_default();
                    if !matches!(status, "resting" | "partially_filled" | "filled" | "canceled" | "rejected")
                    {
                        row.problems.push(format!("order {id} is {status:?} once the log is drained"));
                    }
                    let spec = self.table.lookup(new.symbol).and_then(|s| self.table.get(s));
                    let lots = |d: &Value| -> Option<u64> { lots_of(spec?, d.as_str()?) };
                    let fills = o["fills"].as_array().cloned().unwrap_or_default();
                    let sum: u64 = fills.iter().filter_map(|f| lots(&f["qty"])).sum();
                    if sum > new.qty.0 {
                        row.problems.push(format!("order {id}: fills sum to {sum} lots of {}", new.qty.0));
                    }
                    got.insert(id, o);
                }
                404 => {
                    if self.lost.insert(id) {
                        row.lost += 1;
                        row.problems.push(format!(
                            "acknowledged order {id} ({}) is not on the matcher front",
                            new.client
                        ));
                    }
                }
                s => bail!("the matcher front answered {s} for order {id}"),
            }
        }
        Ok(got)
    }

    /// The checks against the log (see the module doc).
    fn check(&mut self, row: &mut Row, calls: &[Call]) -> anyhow::Result<()> {
        let kafka = self.stack.kafka();
        let log = read_topic(&kafka, "orders", partitions("orders"))?;
        let rebuilt = Rebuilt::from_log(&self.table, &log);
        if rebuilt.undecodable > 0 {
            row.notes.push(format!("{} messages of the log did not decode", rebuilt.undecodable));
        }
        let mut mismatches: Vec<String> = Vec::new();

        // Errored orders that made it into the log.
        let accounts = self.names.clone();
        for call in calls {
            if let (CallKind::New(new), Answer::Unavailable { .. } | Answer::Wrong(_)) =
                (&call.kind, &call.answer)
            {
                if rebuilt.by_client.contains_key(&(accounts[new.sender].clone(), new.client.clone())) {
                    row.errored_logged += 1;
                }
            }
        }

        // Redis: every order of the log, and its fills.
        let mut redis = redis_conn(&self.stack.sup.plan().redis)?;
        let ids: Vec<OrderId> = rebuilt.orders.keys().copied().collect();
        let hashes = hgetall_many(&mut redis, ids.iter().map(|id| format!("order:{id}")))?;
        let fills = hgetall_many(&mut redis, ids.iter().map(|id| format!("fills:{id}")))?;
        let live: HashMap<OrderId, (Hash, Hash)> =
            ids.iter().copied().zip(hashes.into_iter().zip(fills)).collect();

        // Lost: acknowledged, but not in the log where its id says, or not in Redis.
        for (id, (account, client)) in &self.acked {
            let in_log = rebuilt.orders.get(id).is_some_and(|o| &o.account == account && &o.client == client);
            let in_redis = live.get(id).is_some_and(|(h, _)| !h.is_empty());
            if (!in_log || !in_redis) && self.lost.insert(*id) {
                row.lost += 1;
                row.problems.push(format!(
                    "acknowledged order {id} ({client}) lost: in the log at its id: {in_log}, in Redis: {in_redis}"
                ));
            }
        }

        // The trades topic: each trade once, and exactly the rebuilt ones.
        let trades = read_topic(&kafka, "trades", partitions("trades"))?;
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut by_order: HashMap<OrderId, HashSet<String>> = HashMap::new();
        for (_, payload) in trades.iter().flatten() {
            let v: Value = serde_json::from_slice(payload).context("a trades message")?;
            let id = v["trade_id"].as_str().unwrap_or_default().to_owned();
            for side in ["maker_order_id", "taker_order_id"] {
                if let Some(o) = v[side].as_str().and_then(|s| s.parse::<u64>().ok()) {
                    by_order.entry(OrderId(o)).or_default().insert(id.clone());
                }
            }
            *seen.entry(id).or_default() += 1;
        }
        let mut duplicates: usize = seen.values().map(|n| n - 1).sum();
        if duplicates > 0 {
            let twice: Vec<&String> =
                seen.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).take(10).collect();
            row.problems.push(format!("{duplicates} repeated messages on `trades`, e.g. {twice:?}"));
        }
        let missing: Vec<&String> =
            rebuilt.trades.iter().filter(|t| !seen.contains_key(*t)).take(10).collect();
        let extra: Vec<&String> = seen.keys().filter(|t| !rebuilt.trades.contains(*t)).take(10).collect();
        if !missing.is_empty() {
            mismatches.push(format!("trades of the rebuilt book missing from `trades`: {missing:?}…"));
        }
        if !extra.is_empty() {
            mismatches.push(format!("trades on `trades` the rebuilt book never made: {extra:?}…"));
        }

        // Every order of the log against Redis.
        for (id, want) in &rebuilt.orders {
            let Some((hash, fills)) = live.get(id) else { continue };
            if hash.is_empty() {
                if !self.acked.contains_key(id) {
                    mismatches.push(format!("order {id} ({}) is in the log but not in Redis", want.client));
                }
                continue;
            }
            let spec = self.table.get(want.symbol).context("a symbol of the table")?;
            let lots = |s: Option<&String>| -> Option<u64> { lots_of(spec, s?) };
            let on_topic = by_order.get(id).map_or(0, HashSet::len);
            if fills.len() > on_topic {
                duplicates += fills.len() - on_topic;
                row.problems.push(format!(
                    "order {id}: {} fills in Redis, {on_topic} distinct trades on `trades`",
                    fills.len()
                ));
            }
            let fill_sum: u64 = fills
                .values()
                .filter_map(|f| serde_json::from_str::<Value>(f).ok())
                .filter_map(|f| lots(f["qty"].as_str().map(str::to_owned).as_ref()))
                .sum();
            if fill_sum > want.qty.0 {
                row.overfilled += 1;
                row.problems.push(format!("order {id}: fills sum to {fill_sum} lots of {}", want.qty.0));
            }
            let filled = lots(hash.get("filled_qty"));
            let status = hash.get("status").map_or("", String::as_str);
            let (want_status, want_open) = match (want.rejected, rebuilt.engine.order(*id)) {
                (Some(_), _) => ("rejected", 0),
                (None, Some((_, resting))) => {
                    (if want.filled == 0 { "resting" } else { "partially_filled" }, resting.leaves.0)
                }
                (None, None) if want.filled == want.qty.0 => ("filled", 0),
                (None, None) => ("canceled", 0),
            };
            let open = lots(hash.get("qty")).zip(filled).map(|(q, f)| q.saturating_sub(f));
            let open = if want_open > 0 { open } else { Some(0) };
            let reason = hash.get("reject_reason").map(String::as_str);
            let mut wrong = Vec::new();
            if status != want_status {
                wrong.push(format!("status {status:?}, rebuilt {want_status:?}"));
            }
            if filled != Some(want.filled) || fill_sum != want.filled {
                wrong.push(format!("filled {filled:?} (fills {fill_sum}), rebuilt {}", want.filled));
            }
            if open != Some(want_open) {
                wrong.push(format!("open {open:?}, rebuilt {want_open}"));
            }
            if want.rejected.is_some() && reason != want.rejected {
                wrong.push(format!("reject reason {reason:?}, rebuilt {:?}", want.rejected));
            }
            let keys: HashSet<&String> = fills.keys().collect();
            if keys != want.trades.iter().collect() {
                wrong.push(format!("fills {:?}, rebuilt {:?}", keys, want.trades));
            }
            if !wrong.is_empty() {
                mismatches.push(format!("order {id} ({}): {}", want.client, wrong.join("; ")));
            }
        }
        row.duplicate_trades = duplicates.saturating_sub(self.duplicates);
        self.duplicates = duplicates;

        // Each symbol's depth on the matcher front, and each account's open orders.
        let front = self.stack.svc("matcher");
        for (sym, spec) in self.table.iter() {
            let book = rebuilt.engine.book(sym).context("a book per symbol")?;
            let depth = book.depth(50);
            let v: Value = http()
                .get(front.url(&format!("/api/v1/book/{}?depth=50", spec.name)))
                .send()
                .and_then(|r| r.json())
                .context("the matcher front's book")?;
            let side = |levels: &Value| -> Option<Vec<(i64, u64)>> {
                levels
                    .as_array()?
                    .iter()
                    .map(|l| {
                        let p = spec.price("price", Decimal::parse(l[0].as_str()?).ok()?).ok()?;
                        let q = lots_of(spec, l[1].as_str()?)?;
                        Some((p.0, q))
                    })
                    .collect()
            };
            let want = |levels: &[(common::Price, Qty)]| -> Vec<(i64, u64)> {
                levels.iter().map(|(p, q)| (p.0, q.0)).collect()
            };
            let (bids, asks) = (side(&v["bids"]), side(&v["asks"]));
            let seq = v["sequence"].as_u64();
            let want_seq = rebuilt.level_seq.get(&sym).copied().unwrap_or(0);
            if bids != Some(want(&depth.bids)) || asks != Some(want(&depth.asks)) || seq != Some(want_seq) {
                mismatches.push(format!(
                    "{} book: live seq {seq:?} bids {bids:?} asks {asks:?}; rebuilt seq {want_seq} bids {:?} asks {:?}",
                    spec.name,
                    want(&depth.bids),
                    want(&depth.asks)
                ));
            }
        }
        for account in &accounts {
            let open: HashSet<u64> = redis::cmd("SMEMBERS")
                .arg(format!("open:{account}"))
                .query::<Vec<String>>(&mut redis)
                .context("reading an open: set")?
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            let mut want = HashSet::new();
            for (sym, _) in self.table.iter() {
                let book = rebuilt.engine.book(sym).context("a book per symbol")?;
                for o in book.orders(Side::Buy).into_iter().chain(book.orders(Side::Sell)) {
                    if o.account.as_str() == account {
                        want.insert(o.id.0);
                    }
                }
            }
            if open != want {
                let only_live: Vec<_> = open.difference(&want).take(10).collect();
                let only_rebuilt: Vec<_> = want.difference(&open).take(10).collect();
                mismatches.push(format!(
                    "open:{account}: {} live, {} rebuilt; only live {only_live:?}, only rebuilt {only_rebuilt:?}",
                    open.len(),
                    want.len()
                ));
            }
        }
        let resting: usize = self
            .table
            .iter()
            .filter_map(|(sym, _)| rebuilt.engine.book(sym))
            .map(|b| b.orders(Side::Buy).len() + b.orders(Side::Sell).len())
            .sum();
        self.say(&format!(
            "checked {} orders of the log ({} acknowledged so far), {} trades, {} resting",
            rebuilt.orders.len(),
            self.acked.len(),
            rebuilt.trades.len(),
            resting
        ));
        row.book_matches = mismatches.is_empty();
        if !mismatches.is_empty() {
            let n = mismatches.len();
            row.problems.push(format!("the live exchange differs from the log ({n} differences)"));
            row.problems.extend(mismatches.into_iter().take(20));
        }
        Ok(())
    }
}

/// Per `orders` partition, the matchers that say they own it.
type Owners = Vec<Vec<String>>;

/// Settled: every partition has exactly one owner, and none more than its fair share (the
/// partitions over the `matchers`, rounded up): what the leases converge to.
fn settled(owners: &Owners, matchers: usize) -> bool {
    let share = owners.len().div_ceil(matchers.max(1));
    let mut held: HashMap<&str, usize> = HashMap::new();
    for o in owners {
        let [one] = o.as_slice() else { return false };
        *held.entry(one.as_str()).or_default() += 1;
    }
    held.values().all(|&n| n <= share)
}

/// `nobody`, `matcher`, `matcher+matcher-2` (two at once would be a bug).
fn who(owners: &[String]) -> String {
    if owners.is_empty() {
        "nobody".to_owned()
    } else {
        owners.join("+")
    }
}

/// `partition 0 → matcher, partition 1 → matcher-2`.
fn show_owners(owners: &Owners) -> String {
    let each: Vec<String> =
        owners.iter().enumerate().map(|(p, o)| format!("partition {p} → {}", who(o))).collect();
    each.join(", ")
}

/// The partitions' owners as they changed after a fault.
struct Timeline {
    from: Instant,
    last: Owners,
    /// Per partition: its owner before, then each change and when.
    changes: Vec<Vec<String>>,
}

impl Timeline {
    fn new(from: Instant, before: Owners) -> Timeline {
        let changes = before.iter().map(|o| vec![who(o)]).collect();
        Timeline { from, last: before, changes }
    }

    /// One look at the owners.
    fn see(&mut self, now: Owners) {
        let at = self.from.elapsed().as_secs_f64();
        for (p, o) in now.iter().enumerate() {
            if self.last.get(p) != Some(o) && self.changes.get(p).is_some_and(|c| c.len() < 20) {
                self.changes[p].push(format!("{} at +{at:.2} s", who(o)));
            }
        }
        self.last = now;
    }
}

impl fmt::Display for Timeline {
    /// `partition 0: matcher; partition 1: matcher-2 → nobody at +0.01 s → matcher-2 at +3.1 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let each: Vec<String> = self
            .changes
            .iter()
            .enumerate()
            .map(|(p, c)| format!("partition {p}: {}", c.join(" → ")))
            .collect();
        f.write_str(&each.join("; "))
    }
}

/// From `from`, the first order sent after it (on one of partitions `only`, if given) that was
/// acknowledged and matched: the later of its `202` and its `persisted` hop (or `matched`, if the
/// persisted one is missing).
fn recovered(
    calls: &[Call],
    orders: &HashMap<OrderId, Value>,
    from: Instant,
    from_ns: u64,
    only: Option<&[u16]>,
) -> Option<Duration> {
    calls
        .iter()
        .filter(|c| c.sent >= from)
        .filter_map(|c| {
            let (CallKind::New(_), Answer::Ok(v)) = (&c.kind, &c.answer) else { return None };
            let id = OrderId(v["order_id"].as_str()?.parse().ok()?);
            if only.is_some_and(|ps| !ps.contains(&id.partition())) {
                return None;
            }
            let o = orders.get(&id)?;
            let hops = &o["hops"];
            let matched = hops["persisted_ns"].as_u64().or_else(|| hops["matched_ns"].as_u64())?;
            let matched = Duration::from_nanos(matched.saturating_sub(from_ns));
            Some(matched.max(c.done - from))
        })
        .min()
}

/// Counts the new orders by outcome, and the wrong answers: an error is the fault's if its
/// request overlaps `window` (the fault until recovery plus [`GRACE`]); `None`, all are.
fn tally(row: &mut Row, calls: &[Call], window: Option<(Instant, Instant)>) {
    let in_window = |c: &Call| window.is_none_or(|(start, end)| c.done >= start && c.sent <= end);
    let mut wrong: Vec<String> = Vec::new();
    for c in calls {
        let what = match &c.kind {
            CallKind::New(n) => format!("POST order {}", n.client),
            CallKind::Read(id) => format!("GET order {id}"),
            CallKind::Cancel(id) => format!("DELETE order {id}"),
        };
        let at = window.map_or(0.0, |(start, _)| signed_secs(c.sent, start));
        if let CallKind::New(_) = c.kind {
            row.sent += 1;
            match &c.answer {
                Answer::Ok(_) => row.acked += 1,
                Answer::Refused { .. } => row.rejected += 1,
                Answer::Unavailable { .. } | Answer::Wrong(_) => row.errored += 1,
            }
        } else if let (CallKind::Cancel(_), Answer::Ok(_)) = (&c.kind, &c.answer) {
            row.cancels += 1;
        }
        match (&c.kind, &c.answer) {
            (_, Answer::Ok(_)) => {}
            (_, Answer::Wrong(why)) => wrong.push(format!("{what} at {at:+.2} s: {why}")),
            (CallKind::New(_), Answer::Refused { status: 429, .. }) => {}
            (CallKind::New(_), Answer::Refused { status, code }) => {
                wrong.push(format!("{what} at {at:+.2} s: a valid order refused: {status} {code}"))
            }
            // A read or cancel of an order the matcher has not written (yet): only while down.
            (_, Answer::Refused { status: 404, code }) => {
                if !in_window(c) {
                    wrong.push(format!("{what} at {at:+.2} s, outside the fault's window: 404 {code}"));
                }
            }
            (_, Answer::Unavailable { status, code }) => {
                if !in_window(c) {
                    let status = status.map_or("-".to_owned(), |s| s.to_string());
                    wrong.push(format!("{what} at {at:+.2} s, outside the fault's window: {status} {code}"));
                }
            }
            (_, Answer::Refused { status, code }) => {
                wrong.push(format!("{what} at {at:+.2} s: {status} {code}"))
            }
        }
    }
    row.wrong = wrong.len();
    if !wrong.is_empty() {
        row.problems.push(format!("{} wrong answers", wrong.len()));
        row.problems.extend(wrong.into_iter().take(10));
    }
}

fn signed_secs(t: Instant, from: Instant) -> f64 {
    if t >= from {
        (t - from).as_secs_f64()
    } else {
        -(from - t).as_secs_f64()
    }
}

// ---- the flow ----------------------------------------------------------------------------

/// One request of the flow.
#[derive(Debug)]
struct Call {
    kind: CallKind,
    /// When it was sent and when its answer (or error) came back.
    sent: Instant,
    done: Instant,
    answer: Answer,
}

#[derive(Debug)]
enum CallKind {
    New(NewSent),
    /// `GET /api/v1/orders/{id}` before a cancel.
    Read(OrderId),
    Cancel(OrderId),
}

/// A new order as sent.
#[derive(Debug)]
struct NewSent {
    sender: usize,
    client: String,
    symbol: &'static str,
    qty: Qty,
}

/// What came back, classified by what the API documents (DESIGN.md §5, the README's nginx,
/// gateway and order entry sections).
#[derive(Debug)]
enum Answer {
    /// The expected success, its body as documented.
    Ok(Value),
    /// A `4xx` with its documented code.
    Refused { status: u16, code: String },
    /// `502`/`503`/`504` with a documented code, or no answer (`status` `None`): outcome unknown.
    Unavailable { status: Option<u16>, code: String },
    /// Anything else.
    Wrong(String),
}

/// The documented error codes of each status.
fn documented(status: u16, code: &str) -> bool {
    let codes: &[&str] = match status {
        400 => &["malformed_json", "bad_field", "unknown_symbol", "bad_request", "headers_too_large"],
        401 => &["unauthorized", "token_expired", "bad_credentials"],
        403 => &["forbidden"],
        404 => &["not_found"],
        405 => &["method_not_allowed"],
        408 => &["request_timeout"],
        413 => &["body_too_large"],
        414 => &["uri_too_long"],
        422 => &["rule_violation"],
        429 => &["rate_limited"],
        502 => &["gateway_unavailable"],
        503 => &[
            "broker_unavailable",
            "order_svc_unavailable",
            "matcher_unavailable",
            "redis_unavailable",
            "upstream_unavailable",
            "catching_up",
            "unavailable",
        ],
        504 => &["gateway_timeout"],
        _ => &[],
    };
    codes.contains(&code)
}

/// Classifies an answer; `ok` checks the body of the expected status `want`.
fn classify(
    result: reqwest::Result<reqwest::blocking::Response>,
    want: u16,
    ok: impl FnOnce(&Value) -> bool,
) -> Answer {
    let r = match result {
        Ok(r) => r,
        Err(e) => return Answer::Unavailable { status: None, code: format!("no answer: {e}") },
    };
    let status = r.status().as_u16();
    let json = r.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body = match r.text() {
        Ok(b) => b,
        Err(e) => return Answer::Unavailable { status: Some(status), code: format!("body cut off: {e}") },
    };
    let v: Option<Value> = serde_json::from_str(&body).ok();
    let shown = || format!("{status} {}", body.chars().take(200).collect::<String>());
    if status == want {
        return match v {
            Some(v) if json && ok(&v) => Answer::Ok(v),
            _ => Answer::Wrong(format!("not the documented body: {}", shown())),
        };
    }
    let Some(v) = v.filter(|_| json) else { return Answer::Wrong(format!("not JSON: {}", shown())) };
    let code = v["error"]["code"].as_str().unwrap_or_default().to_owned();
    if !v["error"]["message"].is_string() || !documented(status, &code) {
        return Answer::Wrong(format!("not a documented error: {}", shown()));
    }
    match status {
        400..=499 => Answer::Refused { status, code },
        502..=504 => Answer::Unavailable { status: Some(status), code },
        _ => Answer::Wrong(shown()),
    }
}

/// The sender threads of one fault's flow.
struct Flow {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Call>>>,
}

impl Flow {
    /// Starts `config.senders` threads; `phase` makes the client order ids unique.
    fn start(phase: usize, users: &[Service], config: &Config, table: &SymbolTable) -> Flow {
        let stop = Arc::new(AtomicBool::new(false));
        let interval = Duration::from_secs_f64(users.len() as f64 / config.rate);
        let threads = users
            .iter()
            .enumerate()
            .map(|(i, user)| {
                let sender = Sender {
                    index: i,
                    phase,
                    nginx: user.clone(),
                    client: user.client(),
                    side: if i % 2 == 0 { Side::Sell } else { Side::Buy },
                    rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (((phase as u64) << 32) | (i as u64 + 1))),
                    table: table.clone(),
                    interval,
                    stop: stop.clone(),
                };
                std::thread::spawn(move || sender.run())
            })
            .collect();
        Flow { stop, threads }
    }

    /// Stops the senders: every request they made.
    fn stop(self) -> Vec<Call> {
        self.stop.store(true, Ordering::Relaxed);
        let mut calls: Vec<Call> =
            self.threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect();
        calls.sort_by_key(|c| c.sent);
        calls
    }
}

/// One sender thread.
struct Sender {
    index: usize,
    phase: usize,
    nginx: Service,
    client: reqwest::blocking::Client,
    side: Side,
    rng: Rng,
    table: SymbolTable,
    /// Between two of its slots (each a new order, or a read and maybe a cancel).
    interval: Duration,
    stop: Arc<AtomicBool>,
}

impl Sender {
    fn run(mut self) -> Vec<Call> {
        let mut calls = Vec::new();
        let mut resting: VecDeque<(OrderId, Instant)> = VecDeque::new();
        let mut next = Instant::now();
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            // A steady rate: no burst to catch up after a slow answer.
            next = (next + self.interval).max(Instant::now());
            n += 1;
            let old_enough = resting.front().is_some_and(|(_, t)| t.elapsed() > Duration::from_millis(500));
            if n.is_multiple_of(8) && old_enough {
                if let Some((id, _)) = resting.pop_front() {
                    self.cancel(id, &mut calls);
                }
                continue;
            }
            if let Some(id) = self.new_order(n, &mut calls) {
                resting.push_back((id, Instant::now()));
                if resting.len() > 200 {
                    resting.pop_front();
                }
            }
        }
        calls
    }

    /// Sends one new order: its id if it was acknowledged as a GTC order (one to cancel later).
    fn new_order(&mut self, n: u64, calls: &mut Vec<Call>) -> Option<OrderId> {
        let symbol = SYMBOLS[self.rng.below(SYMBOLS.len() as u64) as usize];
        let spec = self.table.lookup(symbol).and_then(|s| self.table.get(s))?.clone();
        // Sells at the reference −3…+2 ticks, buys −2…+3: most cross, some rest.
        let k = self.rng.below(6) as i64 - 3;
        let ticks = spec.reference.0 + if self.side == Side::Buy { k + 1 } else { k };
        let qty = Qty(1 + self.rng.below(5));
        let ioc = self.rng.below(10) == 0;
        let client = format!("f{}-{}-{n}", self.phase, self.index);
        let body = serde_json::json!({
            "client_order_id": client,
            "symbol": symbol,
            "side": self.side.as_str(),
            "type": "limit",
            "time_in_force": if ioc { "ioc" } else { "gtc" },
            "price": spec.price_decimal(common::Price(ticks)).to_string(),
            "qty": spec.qty_decimal(qty).to_string(),
        });
        let sent = Instant::now();
        let result = self.client.post(self.nginx.url("/api/v1/orders")).json(&body).send();
        let answer = classify(result, 202, |v| {
            v["client_order_id"] == client.as_str()
                && v["status"] == "accepted"
                && v["order_id"].as_str().is_some_and(|s| s.parse::<u64>().is_ok())
        });
        let id = match &answer {
            Answer::Ok(v) if !ioc => v["order_id"].as_str().and_then(|s| s.parse().ok()).map(OrderId),
            _ => None,
        };
        let new = NewSent { sender: self.index, client, symbol, qty };
        calls.push(Call { kind: CallKind::New(new), sent, done: Instant::now(), answer });
        id
    }

    /// Reads order `id` and cancels it if it is still open.
    fn cancel(&mut self, id: OrderId, calls: &mut Vec<Call>) {
        let url = self.nginx.url(&format!("/api/v1/orders/{id}"));
        let sent = Instant::now();
        let answer =
            classify(self.client.get(&url).send(), 200, |v| v["order_id"] == id.to_string().as_str());
        let open = match &answer {
            Answer::Ok(v) => v["status"].as_str().is_some_and(common::OrderStatus::is_open_name),
            _ => false,
        };
        calls.push(Call { kind: CallKind::Read(id), sent, done: Instant::now(), answer });
        if !open {
            return;
        }
        let sent = Instant::now();
        let answer = classify(self.client.delete(&url).send(), 202, |v| {
            v["order_id"] == id.to_string().as_str() && v["status"] == "cancel_requested"
        });
        calls.push(Call { kind: CallKind::Cancel(id), sent, done: Instant::now(), answer });
    }
}

/// xorshift64*: a seeded, repeatable stream (no `rand` needed for this).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
    }
}

// ---- the book rebuilt from the log ----------------------------------------------------------

/// A new order of the log, and what the rebuilt engine did with it.
struct LogOrder {
    account: String,
    client: String,
    symbol: SymbolId,
    qty: Qty,
    /// Lots filled.
    filled: u64,
    /// The book's reject reason, if it refused the order.
    rejected: Option<&'static str>,
    /// Its trade ids.
    trades: HashSet<String>,
}

/// The engine fed the whole log, and what it emitted.
struct Rebuilt {
    engine: Engine,
    /// Every new order of the log.
    orders: BTreeMap<OrderId, LogOrder>,
    /// (account, client order id) → the first order with that id.
    by_client: HashMap<(String, String), OrderId>,
    /// Every trade id.
    trades: HashSet<String>,
    /// Each symbol's sequence number at its last level change: what the front's book shows.
    level_seq: HashMap<SymbolId, u64>,
    undecodable: usize,
}

impl Rebuilt {
    /// Applies `log` (per partition, (offset, payload) in order) partition after partition.
    fn from_log(table: &SymbolTable, log: &[Partition]) -> Rebuilt {
        let mut r = Rebuilt {
            engine: Engine::new(table, Capacity::default()),
            orders: BTreeMap::new(),
            by_client: HashMap::new(),
            trades: HashSet::new(),
            level_seq: HashMap::new(),
            undecodable: 0,
        };
        let mut out = Vec::new();
        for (partition, messages) in log.iter().enumerate() {
            for (offset, payload) in messages {
                let Some(id) = OrderId::new(partition as u16, *offset as u64) else { continue };
                let Ok(cmd) = decode_command(payload, id, table) else {
                    r.undecodable += 1;
                    continue;
                };
                if let CommandKind::New(o) = &cmd.kind {
                    let key = (o.account.as_str().to_owned(), o.client_order_id.as_str().to_owned());
                    r.by_client.entry(key.clone()).or_insert(id);
                    let order = LogOrder {
                        account: key.0,
                        client: key.1,
                        symbol: o.symbol,
                        qty: o.qty,
                        filled: 0,
                        rejected: None,
                        trades: HashSet::new(),
                    };
                    r.orders.insert(id, order);
                }
                out.clear();
                r.engine.apply(&cmd, &mut out);
                for e in &out {
                    match e.kind {
                        EventKind::Rejected { order_id, client_order_id: Some(_), reason, .. }
                            if order_id == e.cmd =>
                        {
                            if let Some(o) = r.orders.get_mut(&order_id) {
                                o.rejected = Some(reason.as_str());
                            }
                        }
                        EventKind::Fill { fill, maker, taker, qty, .. } => {
                            let trade = TradeId { cmd: e.cmd, index: fill }.to_string();
                            for side in [maker, taker] {
                                if let Some(o) = r.orders.get_mut(&side) {
                                    o.filled += qty.0;
                                    o.trades.insert(trade.clone());
                                }
                            }
                            r.trades.insert(trade);
                        }
                        EventKind::Level { .. } => {
                            if let Some(symbol) = e.symbol {
                                r.level_seq.insert(symbol, e.seq);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        r
    }
}

// ---- Kafka and Redis readers -------------------------------------------------------------

/// A topic's partition count, from the stack's plan.
fn partitions(topic: &str) -> i32 {
    stack::plan::TOPICS.iter().find(|(t, _)| *t == topic).map_or(1, |(_, n)| *n)
}

/// One partition's messages: (offset, payload), in order.
type Partition = Vec<(i64, Vec<u8>)>;

/// One Redis hash as read.
type Hash = HashMap<String, String>;

fn consumer(kafka: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?)
}

/// Each partition's end (high watermark).
fn ends(kafka: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let c = consumer(kafka, &format!("fault-harness-{}", crate::free_port()))?;
    (0..partitions).map(|p| Ok(c.fetch_watermarks(topic, p, Duration::from_secs(5))?.1)).collect()
}

/// `group`'s committed offsets on `topic` (0 where none), read without joining the group.
fn committed(kafka: &str, group: &str, topic: &str) -> anyhow::Result<Vec<i64>> {
    let c = consumer(kafka, group)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions(topic) {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(5))?;
    Ok((0..partitions(topic))
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(n)) => n,
            _ => 0,
        })
        .collect())
}

/// Every message of `topic` up to the end each partition had when asked: per partition,
/// (offset, payload) in order.
fn read_topic(kafka: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<Partition>> {
    let ends = ends(kafka, topic, partitions)?;
    let c = consumer(kafka, &format!("fault-harness-{}", crate::free_port()))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut out = vec![Vec::new(); partitions as usize];
    let mut next = vec![0i64; partitions as usize];
    let deadline = Instant::now() + Duration::from_secs(120);
    while next.iter().zip(&ends).any(|(n, e)| n < e) {
        if Instant::now() > deadline {
            bail!("reading {topic}: at {next:?} of {ends:?} after 120 s");
        }
        let Some(msg) = c.poll(Duration::from_millis(100)) else { continue };
        let msg = msg?;
        let p = msg.partition() as usize;
        if msg.offset() < ends[p] {
            out[p].push((msg.offset(), msg.payload().unwrap_or_default().to_vec()));
        }
        next[p] = msg.offset() + 1;
    }
    Ok(out)
}

fn redis_conn(url: &str) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(url)?;
    let conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(conn)
}

/// `HGETALL` of each key, pipelined 500 at a time.
fn hgetall_many(
    conn: &mut redis::Connection,
    keys: impl Iterator<Item = String>,
) -> anyhow::Result<Vec<HashMap<String, String>>> {
    let keys: Vec<String> = keys.collect();
    let mut all = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("HGETALL").arg(k);
        }
        let got: Vec<HashMap<String, String>> = pipe.query(conn).context("reading Redis")?;
        all.extend(got);
    }
    Ok(all)
}

/// A quantity as written (a decimal string) in lots of `spec`; zero too (which
/// [`SymbolSpec::qty`](common::SymbolSpec::qty) refuses: an order's quantity is never zero).
fn lots_of(spec: &common::SymbolSpec, text: &str) -> Option<u64> {
    u64::try_from(Decimal::parse(text).ok()?.units_of(spec.lot).ok()?).ok()
}

/// Wall-clock nanoseconds: the clock of the matcher's hops.
fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
