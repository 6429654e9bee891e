//! `edge-mem`: issue 11's memory question for the edge — do the gateways, the order-svc and nginx
//! stay flat as orders and WebSocket sessions go by? (`mem-bench` answers it for the matcher and
//! Redis, on a stack without an edge.)
//!
//! It starts the full stack with the `stack` crate (`Options::native` on free loopback ports in a
//! fresh run directory: broker, Redis, matcher, two order-svc, two gateways with accounts on,
//! nginx; no simulated market; the release binaries beside this executable, Debian's nginx, Tansu
//! where `./lab` finds it), with restarts off (a process that restarted would start its memory
//! over: the run fails instead), signs up and logs in `--users` users (`mb0`, `mb1`, …) through
//! nginx, then measures in two phases. The gateways keep their default rate limits: at the
//! default rate each account sends ~60 orders a second to each gateway, well under them.
//!
//! **Orders.** [`perf::feed::Flow`] (`mem-bench`'s flow: crossing pairs from two accounts that fill
//! each other, 15 % of them an IOC for one lot more, 15 % of episodes an order ten to fifty ticks
//! away that is canceled 4,096 commands later; every client order id new) sent through nginx as
//! the REST API (`POST /api/v1/orders`, `DELETE /api/v1/orders/{id}`, each with its account's
//! token) on an open-loop schedule of `--rate` requests a second, at most `--in-flight` out at
//! once. A pair's second order leaves once the first has its `202` (order entry answers once the
//! broker has the order), so it reaches the book after its maker. Pairs of different episodes are
//! in flight together, though, and interleave: at the flow's jittered prices a taker takes a
//! better-priced maker of another episode and its own is left at a price no later order reaches
//! (the open book grew by ~5 orders per 100 sent). So each pair trades at its symbol's reference
//! price, the maker always on the symbol's side (buy for ABC and XYZ, sell for DEF) and the taker
//! on the other ([`at_the_reference`]): every taker then finds at least its own maker's quantity
//! at that price whatever the interleaving, and the open book stays small (the matcher's
//! `matcher_resting_orders` is in the report). "Orders" below counts requests, new orders and
//! cancels. At each checkpoint (`--warmup`, then `--at`, then `--orders`)
//! the flow stops and drains — the matcher's committed offsets reach the end of every `orders`
//! partition (exact: it commits only what is in Redis and on its output topics), then the
//! gateways' market-data consumers report no lag (`ws_feed_offset_lag`) — and after `--settle-ms`
//! it reads the resident memory (`VmRSS`) of each gateway, each order-svc, nginx (its process
//! group: master and worker) and, for reference, the matcher.
//!
//! **Sessions.** `--rounds` rounds: `--sessions` WebSocket sessions opened at once, straight to
//! the gateways (alternately; nginx's 1,024 worker connections would cap the count through it),
//! each signed in with one of the users' tokens and subscribed to `book:<--symbol>` and `orders`
//! (both answered `subscribed`), held `--hold-ms` while `--session-rate` orders a second flow (so
//! the sessions get book updates and their order events), then closed by the client (a close
//! handshake). After each round: the time until both gateways' `ws_sessions` gauge is back to 0,
//! then after a second the gateways' RSS, `ws_sessions` and `ws_subscriptions`.
//!
//! **Output**: a Markdown table of RSS (MB) per process and checkpoint and one of the rounds, and a
//! growth line per process — from the warm-up checkpoint (round 2: round 1 is the warm-up) to the
//! last, in MB per 10,000 orders (per 1,000 sessions opened on that gateway), by the end points and
//! by a least-squares fit — called flat within ±2 MB or 5 % (allocator noise), else "grows" or
//! "shrinks".
//!
//! **Runtime**: `--orders / --rate` seconds of flow (200 s with the defaults), ~30 s to start the
//! stack, a few seconds per checkpoint, and each round `--hold-ms` plus ~3 s: about 5 minutes with
//! the defaults on the 2-vCPU VM. `--deadline-secs` (900) bounds the whole run. The stack stops at
//! the end, on an error and on Ctrl-C; the run directory (the processes' logs) goes too unless
//! `--keep`.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use common::{NewOrder, Side, SymbolTable};
use hdrhistogram::Histogram;
use perf::feed::{
    bench_main, each_flag, group_rss_kb, metric_sum, thousands, whole_number, whole_numbers, Committed, Flow,
    RunDir, Step,
};
use serde_json::{json, Value};
use stack::{Kind, Options, Plan, Ports, Supervisor};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str =
    "usage: edge-mem [--orders N] [--warmup N] [--at N,N,...] [--rate R] [--in-flight N] [--users N]
                [--rounds N] [--sessions N] [--hold-ms MS] [--session-rate R] [--symbol SYM]
                [--settle-ms MS] [--timeout S] [--deadline-secs S] [--seed N] [--keep]

Starts the full stack (nginx, 2 gateways with accounts, 2 order-svc, matcher, broker, Redis) on
free ports and measures the edge's resident memory:
  orders    --orders requests (new orders and cancels; 200000) through nginx at --rate a second
            (1000; at most --in-flight 64 out), crossing pairs that fill, IOC remainders, orders
            that rest and are canceled, over --users accounts (8); RSS of each gateway, order-svc,
            nginx (and the matcher) after the flow drains at --warmup (20000), --at (orders/4,
            orders/2) and the end, --settle-ms (2000) after the drain (--timeout 120 s at most).
  sessions  --rounds (10) of --sessions (500) WebSocket sessions straight to the gateways, each
            subscribed to book:--symbol (ABC) and orders, held --hold-ms (2000) while
            --session-rate (100) orders a second flow, then closed; the gateways' RSS, ws_sessions
            and ws_subscriptions after each round.
Prints Markdown tables and a growth line per process. About 5 minutes with the defaults (the
flow takes orders/rate seconds); --deadline-secs (900) bounds the run. Ctrl-C stops the stack.
--keep keeps the run directory (logs). Needs the release matcher, order-svc and gateway beside
this binary: cargo build --release -p matcher -p order-svc -p gateway -p perf --bin edge-mem";

// ---- flags -------------------------------------------------------------------------------------

#[derive(Debug)]
struct Flags {
    orders: u64,
    /// Checkpoints, ascending: the warm-up first (the growth's baseline), `orders` last.
    checkpoints: Vec<u64>,
    rate: f64,
    in_flight: usize,
    users: usize,
    rounds: usize,
    sessions: usize,
    hold: Duration,
    session_rate: f64,
    symbol: String,
    settle: Duration,
    timeout: Duration,
    deadline: Duration,
    seed: u64,
    keep: bool,
}

fn flags(args: &[String]) -> Result<Flags, String> {
    let (mut orders, mut warmup, mut at) = (200_000u64, 20_000u64, None);
    let mut f = Flags {
        orders: 0,
        checkpoints: Vec::new(),
        rate: 1_000.0,
        in_flight: 64,
        users: 8,
        rounds: 10,
        sessions: 500,
        hold: Duration::from_millis(2_000),
        session_rate: 100.0,
        symbol: "ABC".into(),
        settle: Duration::from_millis(2_000),
        timeout: Duration::from_secs(120),
        deadline: Duration::from_secs(900),
        seed: 1,
        keep: false,
    };
    f.keep = each_flag(args, USAGE, |name, value| {
        let num = |v: &str| whole_number(name, v, USAGE);
        let real = |v: &str| match v.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(format!("{name}: {v:?} is not a number\n{USAGE}")),
        };
        match name {
            "--orders" => orders = num(value)?,
            "--warmup" => warmup = num(value)?,
            "--at" => at = Some(whole_numbers(name, value, USAGE)?),
            "--rate" => f.rate = real(value)?,
            "--in-flight" => f.in_flight = num(value)? as usize,
            "--users" => f.users = num(value)? as usize,
            "--rounds" => f.rounds = num(value)? as usize,
            "--sessions" => f.sessions = num(value)? as usize,
            "--hold-ms" => f.hold = Duration::from_millis(num(value)?),
            "--session-rate" => f.session_rate = real(value)?,
            "--symbol" => f.symbol = value.to_owned(),
            "--settle-ms" => f.settle = Duration::from_millis(num(value)?),
            "--timeout" => f.timeout = Duration::from_secs(num(value)?),
            "--deadline-secs" => f.deadline = Duration::from_secs(num(value)?),
            "--seed" => f.seed = num(value)?,
            _ => return Err(format!("unknown flag {name}\n{USAGE}")),
        }
        Ok(())
    })?;
    let checks = [
        (orders > 0, "--orders > 0"),
        (f.rate > 0.0 && f.rate <= 20_000.0, "0 < --rate <= 20000"),
        (f.in_flight > 0 && f.in_flight <= 1_000, "0 < --in-flight <= 1000"),
        ((2..=64).contains(&f.users), "2 <= --users <= 64"),
        (f.rounds <= 100, "--rounds <= 100"),
        (f.rounds == 0 || (2..=5_000).contains(&f.sessions), "2 <= --sessions <= 5000"),
        (f.hold <= Duration::from_secs(60), "--hold-ms <= 60000"),
        ((0.0..=5_000.0).contains(&f.session_rate), "0 <= --session-rate <= 5000"),
        (f.settle <= Duration::from_secs(60), "--settle-ms <= 60000"),
        (!f.timeout.is_zero(), "--timeout > 0"),
        (f.deadline <= Duration::from_secs(3_600), "--deadline-secs <= 3600"),
    ];
    if let Some((_, rule)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(format!("need {rule}\n{USAGE}"));
    }
    if orders as f64 / f.rate > f.deadline.as_secs_f64() {
        return Err(format!(
            "--orders {orders} at --rate {} take {:.0} s, more than --deadline-secs {}",
            f.rate,
            orders as f64 / f.rate,
            f.deadline.as_secs()
        ));
    }
    if let Some(n) = at.iter().flatten().find(|&&n| n == 0 || n > orders) {
        return Err(format!("--at {n}: checkpoints lie in 1..=--orders ({orders})"));
    }
    if warmup >= orders {
        return Err(format!("--warmup {warmup} must be below --orders {orders}"));
    }
    let mut at = at.unwrap_or_else(|| vec![orders / 4, orders / 2]);
    at.extend([warmup, orders]);
    at.retain(|&n| n > 0 && n >= warmup);
    at.sort_unstable();
    at.dedup();
    f.orders = orders;
    f.checkpoints = at;
    Ok(f)
}

fn main() {
    bench_main("edge-mem", USAGE, flags, run);
}

// ---- the run -----------------------------------------------------------------------------------

/// The processes of the orders table, in its order, with their row labels.
const MEASURED: [(&str, &str); 6] = [
    ("gateway-1", "gateway-1"),
    ("gateway-2", "gateway-2"),
    ("order-svc-1", "order-svc-1"),
    ("order-svc-2", "order-svc-2"),
    ("nginx", "nginx (master + worker)"),
    ("matcher", "matcher (reference)"),
];

/// One orders checkpoint.
struct Checkpoint {
    /// Requests taken from the flow so far.
    orders: u64,
    /// RSS in MB, in [`MEASURED`]'s order.
    rss: Vec<f64>,
    resting: u64,
    trades: u64,
    answered: u64,
    errors: u64,
    elapsed: Duration,
    /// Requests a second since the previous checkpoint (flow only, drains left out).
    per_sec: f64,
}

/// A gateway, for the session rounds.
#[derive(Clone)]
struct Gw {
    name: String,
    port: u16,
    pid: u32,
}

impl Gw {
    fn metrics(&self, http: &reqwest::blocking::Client) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        Ok(http.get(&url).send()?.error_for_status()?.text()?)
    }
}

/// One session round.
#[derive(Clone, Debug, Default)]
struct Round {
    opened: u64,
    failed: u64,
    /// Per gateway: `ws_sessions` while the round's sessions were held.
    peak: Vec<i64>,
    /// Per gateway: `ws_sessions` after the close.
    after: Vec<i64>,
    /// Per gateway: `ws_subscriptions` after the close.
    subs_after: Vec<i64>,
    /// Per gateway: RSS in MB after the close.
    rss: Vec<f64>,
    /// Frames the sessions received while held.
    frames: u64,
    /// From the client's closes to both gauges at 0 (`None`: not within 15 s).
    to_zero: Option<Duration>,
    first_error: Option<String>,
}

fn run(f: &Flags, cancel: &AtomicBool) -> anyhow::Result<()> {
    let deadline = Instant::now() + f.deadline;
    let dir = RunDir::create("edge-mem", f.keep)?;
    let mut o = Options::native(&dir.path, Ports::Free);
    o.sim = false;
    let plan = Plan::build(&o)?;
    for p in &plan.procs {
        let ours = matches!(p.kind, Kind::Matcher | Kind::OrderSvc | Kind::Gateway);
        ensure!(
            !ours || p.program.exists(),
            "{} not built: cargo build --release -p matcher -p order-svc -p gateway",
            p.program.display()
        );
    }
    eprintln!(
        "edge-mem: {} orders at {}/s (checkpoints {:?}), then {} rounds of {} sessions; stack in {}",
        f.orders,
        f.rate,
        f.checkpoints,
        f.rounds,
        f.sessions,
        dir.path.display()
    );
    let mut sup = Supervisor::new(plan, None).with_output(|line| eprintln!("{line}"));
    sup.start_all(cancel)?;
    let outcome = measure(&mut sup, f, cancel, deadline);
    eprintln!("stopping the stack");
    sup.stop_all();
    let (checkpoints, rounds, notes) = outcome?;
    print!("{}", report(f, &checkpoints, &rounds, &notes));
    Ok(())
}

/// The pids of the measured processes once the stack is up; a sample checks they are unchanged.
fn pids(sup: &Supervisor) -> anyhow::Result<HashMap<String, u32>> {
    MEASURED
        .iter()
        .map(|(name, _)| {
            Ok(((*name).to_owned(), sup.pid(name).with_context(|| format!("{name} is not running"))?))
        })
        .collect()
}

/// Every measured process still runs under its first pid (restarts are off, but say so clearly).
fn check_alive(sup: &mut Supervisor, pids: &HashMap<String, u32>) -> anyhow::Result<()> {
    for (name, _) in MEASURED {
        if !sup.running(name) || sup.pid(name) != pids.get(name).copied() {
            bail!("{name} exited during the run; its log ends:\n{}", sup.tail(name, 20));
        }
    }
    Ok(())
}

type Outcome = (Vec<Checkpoint>, Vec<Round>, Vec<String>);

fn measure(
    sup: &mut Supervisor,
    f: &Flags,
    cancel: &AtomicBool,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let pids = pids(sup)?;
    let plan = sup.plan().clone();
    let url = plan.get("nginx").context("nginx in the plan")?.url("");
    let matcher_metrics = plan.get("matcher").context("a matcher")?.url("/metrics");
    let gws: Vec<Gw> = plan
        .procs
        .iter()
        .filter(|p| p.kind == Kind::Gateway)
        .map(|p| Gw { name: p.name.clone(), port: p.port, pid: pids[&p.name] })
        .collect();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let drain = Drain::connect(&plan)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let users: Vec<String> = (0..f.users).map(|i| format!("mb{i}")).collect();
    let mut driver = rt.block_on(Driver::connect(&url, &users, f))?;
    eprintln!("{} users signed in through nginx at {url}", users.len());
    let mut notes = Vec::new();

    // Orders.
    let started = Instant::now();
    let mut checkpoints = Vec::new();
    let mut flow_time = Duration::ZERO;
    let mut previous = 0u64;
    for &at in &f.checkpoints {
        let since = Instant::now();
        rt.block_on(driver.run(Some(at), f.rate, &AtomicBool::new(false), cancel, deadline))?;
        let sent_for = since.elapsed();
        flow_time += sent_for;
        let (took, note) = drain.wait(sup, &gws, &http, f.timeout.min(remaining(deadline)?), cancel)?;
        if let Some(note) = note {
            notes.push(format!("at {}: {note}", thousands(driver.taken)));
        }
        std::thread::sleep(f.settle);
        check_alive(sup, &pids)?;
        let rss = MEASURED
            .iter()
            .map(|(name, _)| group_rss_kb(pids[*name]).map(|kb| kb as f64 / 1024.0))
            .collect::<Option<Vec<f64>>>()
            .context("reading a process's VmRSS")?;
        let text = http.get(&matcher_metrics).send()?.error_for_status()?.text()?;
        let tally = driver.tally();
        let c = Checkpoint {
            orders: driver.taken,
            rss,
            resting: metric_sum(&text, "matcher_resting_orders") as u64,
            trades: metric_sum(&text, "matcher_trades_total") as u64,
            answered: tally.answered,
            errors: tally.errors.values().sum(),
            elapsed: started.elapsed(),
            per_sec: (driver.taken - previous) as f64 / sent_for.as_secs_f64().max(1e-9),
        };
        previous = driver.taken;
        eprintln!(
            "  checkpoint {}: drained in {:.1} s; RSS MB {}; {} resting; {} errors",
            thousands(c.orders),
            took.as_secs_f64(),
            MEASURED
                .iter()
                .zip(&c.rss)
                .map(|((n, _), mb)| format!("{n} {mb:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            c.resting,
            c.errors
        );
        checkpoints.push(c);
    }
    let tally = driver.tally();
    if let Some(h) = &tally.ack {
        notes.push(format!(
            "orders: {} answered 202 in {:.0} s of flow ({:.0}/s); ack through nginx p50 {:.1} ms, p99 {:.1} ms, \
             max {:.1} ms; errors {}; cancels skipped (their order had no id yet) {}",
            thousands(tally.answered),
            flow_time.as_secs_f64(),
            driver.taken as f64 / flow_time.as_secs_f64().max(1e-9),
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3,
            if tally.errors.is_empty() { "0".to_owned() } else { format!("{:?}", tally.errors) },
            tally.skipped_cancels
        ));
    }

    // Sessions, with a trickle of orders beside them.
    let tokens: Vec<String> = users.iter().map(|u| driver.tokens[u].clone()).collect();
    let done = AtomicBool::new(false);
    let abort = AtomicBool::new(false);
    let rounds = if f.rounds == 0 {
        Vec::new()
    } else {
        std::thread::scope(|s| -> anyhow::Result<Vec<Round>> {
            let handle = s.spawn(|| {
                let _done = SetOnDrop(&done);
                let stopped = || cancel.load(Ordering::SeqCst) || abort.load(Ordering::SeqCst);
                session_rounds(f, &gws, &tokens, &stopped, deadline)
            });
            let flow = rt.block_on(driver.run(None, f.session_rate, &done, cancel, deadline));
            if flow.is_err() {
                abort.store(true, Ordering::SeqCst);
            }
            let rounds = handle.join().map_err(|_| anyhow!("the session thread panicked"))?;
            flow?;
            rounds
        })?
    };
    check_alive(sup, &pids)?;
    let t = driver.tally();
    notes.push(format!(
        "sessions: {} requests answered beside them at {}/s; errors in all {}",
        thousands(t.answered - tally.answered),
        f.session_rate,
        t.errors.values().sum::<u64>()
    ));
    Ok((checkpoints, rounds, notes))
}

/// Time left before `deadline`, or an error once it has passed.
fn remaining(deadline: Instant) -> anyhow::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    ensure!(!left.is_zero(), "the run's deadline (--deadline-secs) passed");
    Ok(left)
}

/// Sets the flag when dropped (the session thread ends, however it ends).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- the order flow through nginx --------------------------------------------------------------

/// What the request tasks count.
#[derive(Clone, Default)]
struct Tally {
    /// Requests answered `202`.
    answered: u64,
    /// Failures by kind (`new: http 429`, `cancel: timeout`, …).
    errors: BTreeMap<String, u64>,
    /// Cancels not sent: their order's `202` (its id) had not come.
    skipped_cancels: u64,
    /// Answer times, µs.
    ack: Option<Histogram<u64>>,
}

/// What the tasks share with the driver.
#[derive(Default)]
struct Shared {
    tally: Tally,
    /// Exchange ids of kept (resting) orders not yet canceled, by command number.
    ids: HashMap<u64, String>,
}

/// One request.
enum Req {
    New { body: Value, account: String, keep: Option<u64> },
    Cancel { account: String, id: String },
}

/// What one task sends: a request, or a crossing pair (the second once the first is in).
enum Job {
    One(Req),
    Pair(Req, Req),
}

/// Sends [`Flow`]'s commands as REST requests through nginx.
struct Driver {
    client: reqwest::Client,
    url: String,
    tokens: Arc<HashMap<String, String>>,
    table: SymbolTable,
    flow: Flow,
    in_flight: usize,
    /// Commands taken from the flow (sent, or a cancel skipped).
    taken: u64,
    shared: Arc<Mutex<Shared>>,
}

impl Driver {
    /// Signs `users` up and logs them in through nginx at `url`.
    async fn connect(url: &str, users: &[String], f: &Flags) -> anyhow::Result<Driver> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(f.in_flight)
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut tokens = HashMap::new();
        for user in users {
            tokens.insert(user.clone(), login(&client, url, user).await?);
        }
        let table = SymbolTable::default();
        let mut shared = Shared::default();
        shared.tally.ack = Some(Histogram::new_with_bounds(1, 120_000_000, 3)?);
        Ok(Driver {
            client,
            url: url.to_owned(),
            tokens: Arc::new(tokens),
            flow: Flow::new(&table, users.len(), f.seed),
            table,
            in_flight: f.in_flight,
            taken: 0,
            shared: Arc::new(Mutex::new(shared)),
        })
    }

    fn tally(&self) -> Tally {
        lock(&self.shared).tally.clone()
    }

    fn new_order(&self, order: &NewOrder, keep: Option<u64>) -> anyhow::Result<Req> {
        let spec = self.table.get(order.symbol).context("a symbol of the table")?;
        let price = order.price.context("the flow's orders are limit orders")?;
        let body = json!({
            "client_order_id": order.client_order_id.as_str(),
            "symbol": spec.name,
            "side": order.side.as_str(),
            "type": order.order_type.as_str(),
            "time_in_force": order.tif.as_str(),
            "price": spec.price_decimal(price).to_string(),
            "qty": spec.qty_decimal(order.qty).to_string(),
        });
        Ok(Req::New { body, account: order.account.as_str().to_owned(), keep })
    }

    /// The flow's next job; `None` for a cancel whose order has no id (skipped, counted).
    fn next_job(&mut self) -> anyhow::Result<Option<Job>> {
        let (n, step) = self.flow.next().context("the flow is endless")?;
        self.taken += 1;
        Ok(Some(match step {
            Step::New { order, keep: true } => Job::One(self.new_order(&order, Some(n))?),
            Step::New { order, keep: false } => {
                // A crossing pair: the flow queued its second order right behind it.
                let Some((_, Step::New { order: second, .. })) = self.flow.next() else {
                    bail!("command {n} starts a pair that has no second order");
                };
                self.taken += 1;
                let (maker, taker) = at_the_reference(&self.table, order, second);
                Job::Pair(self.new_order(&maker, None)?, self.new_order(&taker, None)?)
            }
            Step::Cancel { of, account, .. } => {
                let mut shared = lock(&self.shared);
                match shared.ids.remove(&of) {
                    Some(id) => Job::One(Req::Cancel { account: account.as_str().to_owned(), id }),
                    None => {
                        shared.tally.skipped_cancels += 1;
                        return Ok(None);
                    }
                }
            }
        }))
    }

    /// Sends at `rate` a second until `target` commands are taken (`None`: until `stop`), then
    /// waits for every answer. Fails on `cancel` and after `deadline`.
    async fn run(
        &mut self,
        target: Option<u64>,
        rate: f64,
        stop: &AtomicBool,
        cancel: &AtomicBool,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let permits = Arc::new(tokio::sync::Semaphore::new(self.in_flight));
        let mut tasks = tokio::task::JoinSet::new();
        let start = Instant::now();
        let mut scheduled = 0u64;
        let mut next_line = start + Duration::from_secs(10);
        let result = loop {
            let done = match target {
                Some(t) => self.taken >= t,
                None => stop.load(Ordering::SeqCst),
            };
            if done {
                break Ok(());
            }
            if cancel.load(Ordering::SeqCst) {
                break Err(anyhow!("interrupted"));
            }
            if Instant::now() > deadline {
                break Err(anyhow!("the run's deadline (--deadline-secs) passed"));
            }
            if rate <= 0.0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let due = start + Duration::from_secs_f64(scheduled as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let Some(job) = self.next_job()? else { continue };
            scheduled += match job {
                Job::One(_) => 1,
                Job::Pair(..) => 2,
            };
            let permit = permits.clone().acquire_owned().await?;
            let (client, url, tokens, shared) =
                (self.client.clone(), self.url.clone(), self.tokens.clone(), self.shared.clone());
            tasks.spawn(async move {
                match job {
                    Job::One(r) => {
                        send(&client, &url, &tokens, &r, &shared).await;
                    }
                    Job::Pair(a, b) => {
                        if send(&client, &url, &tokens, &a, &shared).await {
                            send(&client, &url, &tokens, &b, &shared).await;
                        } else {
                            *lock(&shared).tally.errors.entry("pair: second not sent".into()).or_default() +=
                                1;
                        }
                    }
                }
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
            if Instant::now() >= next_line {
                next_line += Duration::from_secs(10);
                let t = self.tally();
                eprintln!(
                    "  {:>4.0} s  taken {}  answered {}  errors {}  in flight {}",
                    start.elapsed().as_secs_f64(),
                    thousands(self.taken),
                    thousands(t.answered),
                    t.errors.values().sum::<u64>(),
                    self.in_flight - permits.available_permits()
                );
            }
        };
        while tasks.join_next().await.is_some() {}
        result
    }
}

/// A crossing pair of the flow at its symbol's reference price, the maker on the symbol's side
/// (buy for even symbol ids, sell for odd), the taker on the other. With every pair of a symbol at
/// one price and its makers on one side, a taker (sent after its maker is in) always finds at least
/// its maker's quantity resting however the pairs interleave, so it fills: the open book holds only
/// the pairs in flight (and an IOC's extra lot taken from one of them), not a growing residue.
fn at_the_reference(table: &SymbolTable, mut maker: NewOrder, mut taker: NewOrder) -> (NewOrder, NewOrder) {
    if let Some(spec) = table.get(maker.symbol) {
        maker.price = Some(spec.reference);
        taker.price = Some(spec.reference);
    }
    maker.side = if maker.symbol.0.is_multiple_of(2) { Side::Buy } else { Side::Sell };
    taker.side = maker.side.opposite();
    (maker, taker)
}

/// Sends one request; true if it was answered `202`. Records the answer time, and a kept order's
/// exchange id for its cancel.
async fn send(
    client: &reqwest::Client,
    url: &str,
    tokens: &HashMap<String, String>,
    req: &Req,
    shared: &Mutex<Shared>,
) -> bool {
    let (what, builder, account) = match req {
        Req::New { body, account, .. } => {
            ("new", client.post(format!("{url}/api/v1/orders")).json(body), account)
        }
        Req::Cancel { account, id } => {
            ("cancel", client.delete(format!("{url}/api/v1/orders/{id}")), account)
        }
    };
    let token = tokens.get(account).map_or("", String::as_str);
    let sent = Instant::now();
    let answer = builder.bearer_auth(token).send().await;
    let outcome = match answer {
        Ok(r) if r.status().as_u16() == 202 => {
            Ok(r.json::<Value>().await.ok().and_then(|v| v["order_id"].as_str().map(str::to_owned)))
        }
        Ok(r) => Err(format!("{what}: http {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err(format!("{what}: timeout")),
        Err(e) if e.is_connect() => Err(format!("{what}: connect")),
        Err(_) => Err(format!("{what}: other")),
    };
    let took = sent.elapsed();
    let mut s = lock(shared);
    if let Some(h) = s.tally.ack.as_mut() {
        h.saturating_record(took.as_micros() as u64);
    }
    match outcome {
        Ok(id) => {
            s.tally.answered += 1;
            if let (Req::New { keep: Some(n), .. }, Some(id)) = (req, id) {
                s.ids.insert(*n, id);
            }
            true
        }
        Err(kind) => {
            *s.tally.errors.entry(kind).or_default() += 1;
            false
        }
    }
}

/// Signs `user` up (a taken name is fine) and logs in: the session token.
async fn login(client: &reqwest::Client, url: &str, user: &str) -> anyhow::Result<String> {
    let creds = json!({"username": user, "password": format!("{user}-edge-mem-password")});
    let r = client.post(format!("{url}/api/v1/auth/signup")).json(&creds).send().await?;
    ensure!(matches!(r.status().as_u16(), 201 | 400), "sign-up {user}: {}", r.status());
    let r = client.post(format!("{url}/api/v1/auth/login")).json(&creds).send().await?;
    let status = r.status();
    let v: Value = r.json().await?;
    v["access_token"].as_str().map(str::to_owned).with_context(|| format!("login {user}: {status} {v}"))
}

// ---- the drain ---------------------------------------------------------------------------------

/// Tells when the stack has done everything sent: the matcher's committed offsets at the end of
/// `orders`, and the gateways' market-data consumers without lag.
struct Drain {
    committed: Committed,
}

impl Drain {
    fn connect(plan: &Plan) -> anyhow::Result<Drain> {
        Ok(Drain { committed: Committed::connect(plan)? })
    }

    /// Commands on `orders` the matcher has not yet committed, summed over the partitions.
    fn matcher_lag(&self) -> anyhow::Result<u64> {
        self.committed.behind_log_end()
    }

    /// Waits until the matcher has committed everything (failing after `timeout`), then up to
    /// 10 s for the gateways' `ws_feed_offset_lag` to read 0 (a note if not). How long it took.
    fn wait(
        &self,
        sup: &mut Supervisor,
        gws: &[Gw],
        http: &reqwest::blocking::Client,
        timeout: Duration,
        cancel: &AtomicBool,
    ) -> anyhow::Result<(Duration, Option<String>)> {
        let since = Instant::now();
        loop {
            ensure!(!cancel.load(Ordering::SeqCst), "interrupted");
            if !sup.running("matcher") {
                bail!("the matcher exited; its log ends:\n{}", sup.tail("matcher", 20));
            }
            let lag = self.matcher_lag()?;
            if lag == 0 {
                break;
            }
            ensure!(since.elapsed() < timeout, "the matcher did not catch up in {timeout:?}: {lag} behind");
            std::thread::sleep(Duration::from_millis(100));
        }
        let feeds = Instant::now();
        loop {
            ensure!(!cancel.load(Ordering::SeqCst), "interrupted");
            let mut behind = Vec::new();
            for g in gws {
                let lag = metric_sum(&g.metrics(http)?, "ws_feed_offset_lag");
                if lag > 0.0 {
                    behind.push(format!("{} {lag}", g.name));
                }
            }
            if behind.is_empty() {
                return Ok((since.elapsed(), None));
            }
            if feeds.elapsed() > Duration::from_secs(10) {
                let note = format!("gateways' ws_feed_offset_lag not 0 after 10 s: {}", behind.join(", "));
                return Ok((since.elapsed(), Some(note)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---- the session rounds ------------------------------------------------------------------------

/// Worker threads a round opens its sessions with.
const SESSION_WORKERS: usize = 16;

/// Runs the rounds; each: open `--sessions` sessions, hold, close, wait for the gauges, sample.
fn session_rounds(
    f: &Flags,
    gws: &[Gw],
    tokens: &[String],
    stopped: &(dyn Fn() -> bool + Sync),
    deadline: Instant,
) -> anyhow::Result<Vec<Round>> {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let gauge =
        |g: &Gw, name: &str| -> anyhow::Result<i64> { Ok(metric_sum(&g.metrics(&http)?, name) as i64) };
    let mut rounds = Vec::new();
    for r in 1..=f.rounds {
        ensure!(!stopped(), "interrupted");
        remaining(deadline)?;
        let opened = AtomicU64::new(0);
        let failed = AtomicU64::new(0);
        let frames = AtomicU64::new(0);
        let close_now = AtomicBool::new(false);
        let errors: Mutex<Vec<String>> = Mutex::default();
        let workers = f.sessions.min(SESSION_WORKERS);
        let (peak, closed) = std::thread::scope(|s| -> anyhow::Result<(Vec<i64>, Instant)> {
            for w in 0..workers {
                let (opened, failed, frames, close_now, errors) =
                    (&opened, &failed, &frames, &close_now, &errors);
                s.spawn(move || {
                    let mut socks = Vec::new();
                    for i in (w..f.sessions).step_by(workers) {
                        if stopped() || close_now.load(Ordering::SeqCst) {
                            break;
                        }
                        let g = &gws[i % gws.len()];
                        match open_session(g.port, &tokens[i % tokens.len()], &f.symbol) {
                            Ok(ws) => {
                                socks.push(ws);
                                opened.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                lock(errors).push(format!("{}: {e:#}", g.name));
                            }
                        }
                    }
                    while !close_now.load(Ordering::SeqCst) {
                        for ws in &mut socks {
                            frames.fetch_add(read_ready(ws), Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    close_all(&mut socks);
                });
            }
            let result = (|| {
                let until = Instant::now() + Duration::from_secs(60);
                while opened.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < f.sessions as u64 {
                    ensure!(!stopped(), "interrupted");
                    ensure!(Instant::now() < until, "round {r}: the sessions did not open in 60 s");
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(f.hold);
                gws.iter().map(|g| gauge(g, "ws_sessions")).collect::<anyhow::Result<Vec<i64>>>()
            })();
            close_now.store(true, Ordering::SeqCst);
            Ok((result?, Instant::now()))
        })?;
        // Closed by the client (the workers wait for each close handshake, up to 3 s): how long
        // from the first close until the gateways count none?
        let mut to_zero = None;
        while closed.elapsed() < Duration::from_secs(15) {
            let open: i64 = gws.iter().map(|g| gauge(g, "ws_sessions")).sum::<anyhow::Result<i64>>()?;
            if open == 0 {
                to_zero = Some(closed.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(1));
        let mut round = Round {
            opened: opened.load(Ordering::SeqCst),
            failed: failed.load(Ordering::SeqCst),
            peak,
            frames: frames.load(Ordering::SeqCst),
            to_zero,
            first_error: lock(&errors).first().cloned(),
            ..Round::default()
        };
        for g in gws {
            round.after.push(gauge(g, "ws_sessions")?);
            round.subs_after.push(gauge(g, "ws_subscriptions")?);
            let kb = group_rss_kb(g.pid).with_context(|| format!("{} is gone", g.name))?;
            round.rss.push(kb as f64 / 1024.0);
        }
        eprintln!(
            "  round {r}: {} opened, {} failed, peak ws_sessions {:?}, after {:?}, RSS MB {:?}",
            round.opened, round.failed, round.peak, round.after, round.rss
        );
        rounds.push(round);
    }
    Ok(rounds)
}

/// Opens a session signed in with `token` and subscribes it to `book:<symbol>` and `orders`;
/// returns once both are answered `subscribed`, the socket then non-blocking.
fn open_session(port: u16, token: &str, symbol: &str) -> anyhow::Result<WebSocket<TcpStream>> {
    let mut req = format!("ws://127.0.0.1:{port}/ws").into_client_request()?;
    req.headers_mut().insert("Authorization", format!("Bearer {token}").parse()?);
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_nodelay(true)?;
    let (mut ws, _) = tungstenite::client::client(req, stream).map_err(|e| anyhow!("the upgrade: {e}"))?;
    for (id, channel) in [(1, format!("book:{symbol}")), (2, "orders".to_owned())] {
        ws.send(Message::text(json!({"op": "subscribe", "channel": channel, "id": id}).to_string()))?;
    }
    let mut subscribed = [false; 2];
    let until = Instant::now() + Duration::from_secs(10);
    while !subscribed.iter().all(|&s| s) {
        ensure!(Instant::now() < until, "no answer to the subscriptions in 10 s");
        match ws.read()? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t)?;
                match (v["type"].as_str(), v["id"].as_u64()) {
                    (Some("subscribed"), Some(id @ 1..=2)) => subscribed[id as usize - 1] = true,
                    (Some("error"), _) => bail!("refused: {v}"),
                    _ => {}
                }
            }
            Message::Close(c) => bail!("closed by the gateway: {c:?}"),
            _ => {}
        }
    }
    ws.get_mut().set_nonblocking(true)?;
    Ok(ws)
}

/// Reads every frame that has come (non-blocking socket); how many.
fn read_ready(ws: &mut WebSocket<TcpStream>) -> u64 {
    let mut n = 0;
    loop {
        match ws.read() {
            Ok(_) => n += 1,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return n,
            Err(_) => return n,
        }
    }
}

/// Closes every session (the close handshake, up to 3 s), then drops the connections.
fn close_all(socks: &mut Vec<WebSocket<TcpStream>>) {
    for ws in socks.iter_mut() {
        let _ = ws.close(None);
    }
    let mut open = vec![true; socks.len()];
    let until = Instant::now() + Duration::from_secs(3);
    while open.iter().any(|&o| o) && Instant::now() < until {
        for (ws, o) in socks.iter_mut().zip(open.iter_mut()).filter(|(_, o)| **o) {
            match ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let _ = ws.flush();
                }
                // The gateway's close came back (ConnectionClosed), or the socket went.
                Err(_) => *o = false,
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    socks.clear();
}

// ---- the report --------------------------------------------------------------------------------

/// Below this (or [`FLAT_SHARE`] of the baseline, whichever is larger) a change is called flat:
/// allocators return memory to the system late and in pieces.
const FLAT_MB: f64 = 2.0;
const FLAT_SHARE: f64 = 0.05;

/// How a process's memory moved from its baseline to its last sample.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Growth {
    from_x: f64,
    to_x: f64,
    from_mb: f64,
    to_mb: f64,
    /// (last − first) per `unit` of x.
    per_unit: f64,
    /// The least-squares slope per `unit` of x over every point.
    fit_per_unit: f64,
}

impl Growth {
    /// From `points` (x ascending, MB); `unit`: the x the rates are per. `None` with fewer than two
    /// points or no x span.
    fn of(points: &[(f64, f64)], unit: f64) -> Option<Growth> {
        let (&(from_x, from_mb), &(to_x, to_mb)) = (points.first()?, points.last()?);
        if points.len() < 2 || to_x <= from_x || unit <= 0.0 {
            return None;
        }
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        Some(Growth {
            from_x,
            to_x,
            from_mb,
            to_mb,
            per_unit: (to_mb - from_mb) / (to_x - from_x) * unit,
            fit_per_unit: if sxx > 0.0 { sxy / sxx * unit } else { 0.0 },
        })
    }

    fn delta(&self) -> f64 {
        self.to_mb - self.from_mb
    }

    fn flat(&self) -> bool {
        self.delta().abs() <= FLAT_MB.max(FLAT_SHARE * self.from_mb)
    }

    /// "flat", "grows" or "shrinks".
    fn verdict(&self) -> &'static str {
        match (self.flat(), self.delta() > 0.0) {
            (true, _) => "flat",
            (false, true) => "grows",
            (false, false) => "shrinks",
        }
    }

    /// "name: A → B MB from X to Y what: ±D MB (±r MB per unit_name; fit ±s): flat|grows|shrinks".
    fn line(&self, name: &str, what: &str, unit_name: &str) -> String {
        format!(
            "- {name}: {:.1} → {:.1} MB from {} to {} {what}: {:+.1} MB ({:+.2} MB per {unit_name}; least-squares \
             {:+.2}): {}",
            self.from_mb,
            self.to_mb,
            thousands(self.from_x as u64),
            thousands(self.to_x as u64),
            self.delta(),
            self.per_unit,
            self.fit_per_unit,
            self.verdict()
        )
    }
}

/// The orders table: a row per process (RSS MB at each checkpoint), then the open book and the
/// requests answered.
fn orders_table(checkpoints: &[Checkpoint]) -> String {
    let mut out = String::from("| process |");
    for c in checkpoints {
        out.push_str(&format!(" {} |", thousands(c.orders)));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(checkpoints.len()));
    out.push('\n');
    for (i, (_, label)) in MEASURED.iter().enumerate() {
        out.push_str(&format!("| {label} RSS MB |"));
        for c in checkpoints {
            out.push_str(&c.rss.get(i).map_or(" – |".to_owned(), |mb| format!(" {mb:.1} |")));
        }
        out.push('\n');
    }
    let mut row = |label: &str, value: &dyn Fn(&Checkpoint) -> String| {
        out.push_str(&format!("| {label} |"));
        for c in checkpoints {
            out.push_str(&format!(" {} |", value(c)));
        }
        out.push('\n');
    };
    row("resting orders (matcher)", &|c| thousands(c.resting));
    row("trades (matcher)", &|c| thousands(c.trades));
    row("answered 202 / errors", &|c| format!("{} / {}", thousands(c.answered), c.errors));
    row("requests/s since the last", &|c| format!("{:.0}", c.per_sec));
    row("elapsed s", &|c| format!("{:.0}", c.elapsed.as_secs_f64()));
    out
}

/// The sessions table: a row per round.
fn sessions_table(rounds: &[Round], gws: &[String]) -> String {
    let names = gws.join(" / ");
    let mut out = format!(
        "| round | opened (failed) | ws_sessions held, {names} | ws_sessions after close | ws_subscriptions after | \
         to 0 s | frames received |"
    );
    for g in gws {
        out.push_str(&format!(" {g} RSS MB |"));
    }
    out.push_str("\n|---:|---:|---:|---:|---:|---:|---:|");
    out.push_str(&"---:|".repeat(gws.len()));
    out.push('\n');
    let join = |xs: &[i64]| xs.iter().map(i64::to_string).collect::<Vec<_>>().join(" / ");
    for (i, r) in rounds.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} ({}) | {} | {} | {} | {} | {} |",
            i + 1,
            r.opened,
            r.failed,
            join(&r.peak),
            join(&r.after),
            join(&r.subs_after),
            r.to_zero.map_or("> 15".to_owned(), |d| format!("{:.2}", d.as_secs_f64())),
            thousands(r.frames)
        ));
        for mb in &r.rss {
            out.push_str(&format!(" {mb:.1} |"));
        }
        out.push('\n');
    }
    out
}

fn report(f: &Flags, checkpoints: &[Checkpoint], rounds: &[Round], notes: &[String]) -> String {
    let mut out = format!(
        "# edge-mem: {} orders through nginx, then {} rounds × {} WebSocket sessions\n\n\
         The full stack (nginx, 2 gateways with accounts, 2 order-svc, matcher, Tansu, Redis; release \
         build) on {} cores; {} users; orders at {}/s (at most {} in flight), sampled {:.1} s after each \
         drain; sessions held {:.1} s with {}/s of orders beside them.\n\n## Orders: RSS MB after each \
         checkpoint (drained)\n\n",
        thousands(f.orders),
        f.rounds,
        f.sessions,
        std::thread::available_parallelism().map_or(0, usize::from),
        f.users,
        f.rate,
        f.in_flight,
        f.settle.as_secs_f64(),
        f.hold.as_secs_f64(),
        f.session_rate
    );
    out.push_str(&orders_table(checkpoints));
    out.push_str(&format!(
        "\nGrowth from the warm-up checkpoint ({}) to the last, per 10,000 orders (flat: within ±{FLAT_MB} MB or \
         {:.0} %):\n\n",
        checkpoints.first().map_or("none".into(), |c| thousands(c.orders)),
        FLAT_SHARE * 100.0
    ));
    for (i, (_, label)) in MEASURED.iter().enumerate() {
        let points: Vec<(f64, f64)> =
            checkpoints.iter().filter_map(|c| Some((c.orders as f64, *c.rss.get(i)?))).collect();
        if let Some(g) = Growth::of(&points, 10_000.0) {
            out.push_str(&g.line(label, "orders", "10k orders"));
            out.push('\n');
        }
    }
    if !rounds.is_empty() {
        let gws: Vec<String> =
            MEASURED.iter().filter(|(n, _)| n.starts_with("gateway")).map(|(n, _)| (*n).to_owned()).collect();
        out.push_str(&format!(
            "\n## Sessions: {} rounds of {} (half on each gateway), subscribed to book:{} and orders, then closed\n\n",
            rounds.len(),
            f.sessions,
            f.symbol
        ));
        out.push_str(&sessions_table(rounds, &gws));
        // Round 1 is the warm-up (the first sessions' buffers), when there are rounds enough after it.
        let skip = usize::from(rounds.len() >= 3);
        out.push_str(&format!(
            "\nGrowth from round {} to the last, per 1,000 sessions opened on the gateway:\n\n",
            skip + 1
        ));
        for (i, g) in gws.iter().enumerate() {
            // x: sessions opened on this gateway so far (every other session goes to it).
            let per_round = (f.sessions / gws.len()) as f64;
            let points: Vec<(f64, f64)> = rounds
                .iter()
                .enumerate()
                .skip(skip)
                .filter_map(|(r, x)| Some(((r + 1) as f64 * per_round, *x.rss.get(i)?)))
                .collect();
            if let Some(growth) = Growth::of(&points, 1_000.0) {
                out.push_str(&growth.line(g, "sessions", "1k sessions"));
                out.push('\n');
            }
        }
        let stuck: Vec<String> = rounds
            .iter()
            .enumerate()
            .filter(|(_, r)| r.after.iter().any(|&n| n != 0) || r.failed > 0)
            .map(|(i, r)| {
                format!("round {}: after {:?}, failed {} ({:?})", i + 1, r.after, r.failed, r.first_error)
            })
            .collect();
        out.push_str(&if stuck.is_empty() {
            "- ws_sessions back to 0 on both gateways after every round; every session opened.\n".to_owned()
        } else {
            format!("- NOT back to 0 or failed: {}\n", stuck.join("; "))
        });
    }
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            out.push_str(&format!("- {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_default_checkpoints_start_at_the_warmup() {
        let f = flags(&[]).unwrap();
        assert_eq!(f.checkpoints, [20_000, 50_000, 100_000, 200_000]);
        assert_eq!(flags(&args("--orders 40000 --at 30000")).unwrap().checkpoints, [20_000, 30_000, 40_000]);
        // A checkpoint before the warm-up is no checkpoint: the warm-up is the baseline.
        assert_eq!(
            flags(&args("--orders 100000 --warmup 50000")).unwrap().checkpoints,
            [50_000, 100_000],
            "orders/4 falls before the warm-up"
        );
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        for (bad, why) in [
            ("--orders", "needs a value"),
            ("--orders x", "not a whole number"),
            ("--orders 0", "--orders > 0"),
            ("--rate -5", "--rate"),
            ("--rate nan", "not a number"),
            ("--users 1", "--users"),
            ("--sessions 100000", "--sessions"),
            ("--at 300000", "checkpoints lie in"),
            ("--warmup 200000", "must be below"),
            ("--orders 2000000 --rate 100", "more than --deadline-secs"),
            ("--bogus 1", "unknown flag"),
        ] {
            let e = flags(&args(bad)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(flags(&args("--rounds 0 --sessions 0")).is_ok(), "no session phase at all");
        assert!(flags(&args("--keep --rate 500.5")).unwrap().keep);
    }

    #[test]
    fn growth_is_per_unit_by_end_points_and_by_fit() {
        let flat =
            Growth::of(&[(20_000.0, 50.0), (50_000.0, 51.0), (100_000.0, 50.5), (200_000.0, 50.8)], 10_000.0)
                .unwrap();
        assert!(flat.flat());
        assert!((flat.per_unit - 0.8 / 18.0).abs() < 1e-9);
        // 1 MB per 10k orders, exactly linear: both estimates agree.
        let pts: Vec<(f64, f64)> =
            [20_000.0, 50_000.0, 100_000.0, 200_000.0].iter().map(|&x| (x, 40.0 + x / 10_000.0)).collect();
        let grows = Growth::of(&pts, 10_000.0).unwrap();
        assert!(!grows.flat());
        assert!((grows.per_unit - 1.0).abs() < 1e-9 && (grows.fit_per_unit - 1.0).abs() < 1e-9);
        assert!(grows.line("gateway-1", "orders", "10k orders").ends_with("grows"));
        // 5 % of a big process is still flat.
        assert!(Growth::of(&[(0.0, 200.0), (1.0, 209.0)], 1.0).unwrap().flat());
        assert_eq!(Growth::of(&[(1.0, 1.0)], 1.0), None, "one point");
        assert_eq!(Growth::of(&[(1.0, 1.0), (1.0, 2.0)], 1.0), None, "no span");
        assert_eq!(Growth::of(&[], 1.0), None);
    }

    /// The flow through the real engine with its pairs interleaved as concurrent senders interleave
    /// them (each taker after its own maker, but up to 16 other episodes' orders in between, in
    /// random order): at the flow's own prices the open book keeps growing; at the reference
    /// price it holds the kept orders and the pairs in flight only.
    #[test]
    fn pairs_at_the_reference_keep_the_book_bounded_when_episodes_interleave() {
        use common::{Cancel, Command, CommandKind, OrderId, Timestamp};
        use matcher::{Capacity, Engine};
        let table = SymbolTable::default();
        let resting = |rewrite: bool| -> (usize, u64) {
            let mut engine = Engine::new(&table, Capacity::default());
            let mut flow = Flow::new(&table, 8, 11);
            let (mut offsets, mut ids, mut out) = ([0u64; 3], HashMap::new(), Vec::new());
            let mut in_flight: Vec<NewOrder> = Vec::new();
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut fills = 0u64;
            let mut apply = |engine: &mut Engine, kind: CommandKind, symbol: common::SymbolId| {
                let p = symbol.0 as usize;
                let id = OrderId::new(p as u16, offsets[p]).unwrap();
                offsets[p] += 1;
                out.clear();
                engine.apply(&Command { id, ts: Timestamp(offsets[p]), kind }, &mut out);
                fills +=
                    out.iter().filter(|e| matches!(e.kind, common::EventKind::Fill { .. })).count() as u64;
                id
            };
            for _ in 0..60_000 {
                let (n, step) = flow.next().unwrap();
                match step {
                    Step::New { order, keep: true } => {
                        ids.insert(n, apply(&mut engine, CommandKind::New(order), order.symbol));
                    }
                    Step::New { order, keep: false } => {
                        let Some((_, Step::New { order: second, .. })) = flow.next() else {
                            panic!("a pair")
                        };
                        let (maker, taker) =
                            if rewrite { at_the_reference(&table, order, second) } else { (order, second) };
                        apply(&mut engine, CommandKind::New(maker), maker.symbol);
                        in_flight.push(taker);
                    }
                    Step::Cancel { of, symbol, account } => {
                        let order_id = ids.remove(&of).unwrap();
                        apply(&mut engine, CommandKind::Cancel(Cancel { order_id, account }), symbol);
                    }
                }
                while in_flight.len() > 16 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let taker = in_flight.swap_remove((rng % in_flight.len() as u64) as usize);
                    apply(&mut engine, CommandKind::New(taker), taker.symbol);
                }
            }
            engine.validate().unwrap();
            (engine.resting_orders(), fills)
        };
        let (at_reference, fills) = resting(true);
        let (jittered, _) = resting(false);
        assert!(at_reference <= 400, "the open book reached {at_reference} orders at the reference");
        assert!(fills > 20_000, "pairs trade: {fills} fills");
        assert!(jittered > 2 * at_reference, "interleaved at jittered prices: {jittered} resting");
    }

    #[test]
    fn the_tables_have_a_column_per_checkpoint_and_a_row_per_round() {
        let c = |orders, mb| Checkpoint {
            orders,
            rss: vec![mb; MEASURED.len()],
            resting: 300,
            trades: 1,
            answered: orders,
            errors: 0,
            elapsed: Duration::from_secs(1),
            per_sec: 1_000.0,
        };
        let t = orders_table(&[c(20_000, 40.0), c(50_000, 41.25)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| process | 20,000 | 50,000 |");
        assert_eq!(lines[1], "|---|---:|---:|");
        assert_eq!(lines[2], "| gateway-1 RSS MB | 40.0 | 41.2 |");
        assert!(lines.iter().all(|l| l.matches('|').count() == 4), "{t}");
        let r = Round {
            opened: 500,
            peak: vec![250, 250],
            after: vec![0, 0],
            subs_after: vec![0, 0],
            rss: vec![30.0, 31.0],
            to_zero: Some(Duration::from_millis(120)),
            ..Round::default()
        };
        let gws = ["gateway-1".to_owned(), "gateway-2".to_owned()];
        let t = sessions_table(&[r.clone(), r], &gws);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2], "| 1 | 500 (0) | 250 / 250 | 0 / 0 | 0 / 0 | 0.12 | 0 | 30.0 | 31.0 |");
        assert!(lines.iter().all(|l| l.matches('|').count() == lines[0].matches('|').count()), "{t}");
    }
}
