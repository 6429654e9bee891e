//! `load-gen`: an open-loop load generator for the running stack (DESIGN.md §6), through nginx.
//!
//! Orders leave on a constant-rate schedule: order *i* is due at `start + i / rate`, and its
//! latency is measured from that *intended* time, so a stall is charged to every order it delayed
//! (coordinated omission corrected, as wrk2 does). A thread of its own keeps the schedule on the
//! OS's timer (tokio's rounds each deadline up to the next millisecond, which added up to a
//! millisecond of the generator's own lateness to every order: p50 ack 3.1 → 2.0 ms at 100/s
//! against the same stack, alternated, 2026-12-02). At most `--in-flight` requests are out at once
//! over keep-alive connections; when all are out, the next order waits for one — and that wait is
//! in its latency. The run is bounded (`--duration`), its first `--warmup` seconds are sent but
//! not recorded, and it shows its progress: a bar on a terminal (`indicatif`), a line every 5 s
//! into a log.
//!
//! The flow, over `--users` accounts (signed up and logged in first, so the gateway's per-account
//! limits apply to each; raise them for a big run) on one symbol, deterministic by `--seed`:
//! makers (60 %) rest a limit order one to five ticks behind the mid on either side, takers
//! (30 %) send an IOC that crosses five ticks through it, and the rest cancel one of their
//! account's earlier resting orders (or, with none, make). So a known share trades.
//!
//! Output: the table (offered and achieved rate, p50, p90, p99, p99.9, max of the ack — the
//! HTTP answer through nginx — and errors by kind), and with `--hgrm DIR` the ack histogram as
//! an `.hgrm` percentile file. It also reports order → trade: from each taker's intended send
//! time to its first fill, with its own `.hgrm`, seen where a trader sees it — the gateways'
//! WebSocket feed (`<url>/ws`, the public `trades:<symbol>` channel; a trade's id starts with its
//! taker's order id), which adds no reader to the broker; so only takers whose `202` came back
//! are counted (how many had none is printed) — or, with `--trades kafka`, on the `trades` topic
//! by a consumer of its own (by client order id, so every taker). Afterwards it reads back an even sample of the accepted
//! orders (up to 300) and prints where their time went, hop by hop (gateway → published →
//! consumed → matched → persisted, from each order's `hops`), with `--hgrm DIR` also as
//! `hops-<rate>.tsv`.
//!
//! Flags: `--url` (`http://127.0.0.1:8080`), `--rate N` (500), `--duration S` (20), `--warmup S`
//! (3), `--in-flight N` (64), `--users N` (4), `--symbol S` (`ABC`), `--mid P` (`100.00`), `--tick
//! T` (`0.01`), `--seed N` (1), `--hgrm DIR`, `--trades ws|kafka|none` (where order → trade is
//! seen: `ws` unless `--brokers` is given), `--brokers HOST:PORT` (for `kafka`),
//! `--trades-wait-ms N` (5: the Kafka trade watcher's `fetch.wait.max.ms`; stock Tansu holds each
//! fetch that long, so it adds up to N ms to order → trade, and every fetch costs the broker CPU
//! the stack under test then lacks: ~200 fetches a second at 5 ms, each a dozen SQL statements on
//! Tansu — why `ws` is the default).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Flags {
    url: String,
    rate: f64,
    duration: f64,
    warmup: f64,
    in_flight: usize,
    users: usize,
    symbol: String,
    mid: f64,
    tick: f64,
    seed: u64,
    hgrm: Option<std::path::PathBuf>,
    brokers: Option<String>,
    trades_wait_ms: u32,
    trades: Option<String>,
}

const USAGE: &str = "usage: load-gen [--url URL] [--rate N] [--duration S] [--warmup S] [--in-flight N] [--users N] [--symbol S] [--mid P] [--tick T] [--seed N] [--hgrm DIR] [--trades ws|kafka|none] [--brokers HOST:PORT] [--trades-wait-ms N]";

fn flags() -> Result<Flags, String> {
    let mut f = Flags {
        url: "http://127.0.0.1:8080".into(),
        rate: 500.0,
        duration: 20.0,
        warmup: 3.0,
        in_flight: 64,
        users: 4,
        symbol: "ABC".into(),
        mid: 100.0,
        tick: 0.01,
        seed: 1,
        hgrm: None,
        brokers: None,
        trades_wait_ms: 5,
        trades: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(name) = it.next() {
        let value = it.next().ok_or(format!("{name} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|_| format!("{name}: {v:?} is not a number\n{USAGE}"));
        match name.as_str() {
            "--url" => f.url = value.trim_end_matches('/').to_owned(),
            "--rate" => f.rate = num(value)?,
            "--duration" => f.duration = num(value)?,
            "--warmup" => f.warmup = num(value)?,
            "--in-flight" => f.in_flight = num(value)? as usize,
            "--users" => f.users = num(value)? as usize,
            "--symbol" => f.symbol = value.clone(),
            "--mid" => f.mid = num(value)?,
            "--tick" => f.tick = num(value)?,
            "--seed" => f.seed = num(value)? as u64,
            "--hgrm" => f.hgrm = Some(value.into()),
            "--brokers" => f.brokers = Some(value.clone()),
            "--trades-wait-ms" => f.trades_wait_ms = num(value)? as u32,
            "--trades" if ["ws", "kafka", "none"].contains(&value.as_str()) => f.trades = Some(value.clone()),
            "--trades" => return Err(format!("--trades: {value:?} is not ws, kafka or none\n{USAGE}")),
            _ => return Err(format!("unknown flag {name}\n{USAGE}")),
        }
    }
    if !(f.rate > 0.0 && f.duration > 0.0 && f.warmup >= 0.0 && f.in_flight > 0 && f.users >= 2) {
        return Err(format!(
            "need --rate > 0, --duration > 0, --warmup >= 0, --in-flight > 0, --users >= 2\n{USAGE}"
        ));
    }
    if f.trades.as_deref() == Some("kafka") && f.brokers.is_none() {
        return Err(format!("--trades kafka needs --brokers HOST:PORT\n{USAGE}"));
    }
    if f.duration > 600.0 || f.rate > 100_000.0 {
        return Err("bounded runs only: --duration at most 600 s, --rate at most 100000/s".into());
    }
    Ok(f)
}

/// xorshift64*: the flow is the same for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one request was.
enum Action {
    New(Value),
    Cancel(String),
}

/// What the run counts, shared by the request tasks.
#[derive(Default)]
struct Tally {
    ack: Option<Histogram<u64>>,
    done: u64,
    recorded: u64,
    errors: BTreeMap<String, u64>,
    /// When the last recorded answer came: achieved rate = answers / (this − end of warm-up), so
    /// a backlog that drains after the schedule ends lowers it.
    last: Option<Instant>,
    /// The recorded new orders the exchange accepted: (user, exchange id), for the hop sample.
    accepted: Vec<(usize, String)>,
    /// Accepted takers: exchange id → the order's index (a WebSocket trade names its taker by id).
    takers: HashMap<String, u64>,
    /// Recorded takers sent, answered or not.
    takers_sent: u64,
}

/// The hops of an order's path (DESIGN.md §2 "Time"), as the order's `hops` names their ends.
const HOPS: [(&str, &str, &str); 4] = [
    ("gateway → published", "gateway_ns", "published_ns"),
    ("published → consumed", "published_ns", "consumed_ns"),
    ("consumed → matched", "consumed_ns", "matched_ns"),
    ("matched → persisted", "matched_ns", "persisted_ns"),
];

/// How many accepted orders the hop breakdown reads back, at most.
const HOP_SAMPLE: usize = 300;

/// Reads back an even sample of the accepted orders (after the run: it does not disturb it) and
/// gives each hop's durations in ms.
async fn hop_sample(
    client: &reqwest::Client,
    url: &str,
    tokens: &[String],
    accepted: &[(usize, String)],
) -> Vec<Vec<f64>> {
    let step = accepted.len().div_ceil(HOP_SAMPLE).max(1);
    let mut per_hop = vec![Vec::new(); HOPS.len()];
    for (user, id) in accepted.iter().step_by(step) {
        let order = client.get(format!("{url}/api/v1/orders/{id}")).bearer_auth(&tokens[*user]).send().await;
        let Ok(order) = order else { continue };
        let Ok(v) = order.json::<Value>().await else { continue };
        for (i, (_, from, to)) in HOPS.iter().enumerate() {
            if let (Some(a), Some(b)) = (v["hops"][from].as_u64(), v["hops"][to].as_u64()) {
                per_hop[i].push(b.saturating_sub(a) as f64 / 1e6);
            }
        }
    }
    per_hop
}

/// The value at quantile `q` of sorted `xs`.
fn quantile(xs: &[f64], q: f64) -> f64 {
    xs.get(((xs.len() as f64 * q) as usize).min(xs.len().saturating_sub(1))).copied().unwrap_or(0.0)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("valid bounds")
}

/// Signs `user` up (a taken name is fine) and logs in: the session token.
async fn login(client: &reqwest::Client, url: &str, user: &str) -> Result<String, String> {
    let creds = json!({"username": user, "password": format!("{user}-load-password")});
    let r = client
        .post(format!("{url}/api/v1/auth/signup"))
        .json(&creds)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !matches!(r.status().as_u16(), 201 | 400) {
        return Err(format!("sign-up {user}: {}", r.status()));
    }
    let r = client
        .post(format!("{url}/api/v1/auth/login"))
        .json(&creds)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    v["access_token"].as_str().map(str::to_owned).ok_or(format!("login {user}: {status} {v}"))
}

fn main() {
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return;
    }
    let f = match flags() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    if let Err(e) = rt.block_on(run(f)) {
        eprintln!("load-gen: {e}");
        std::process::exit(1);
    }
}

async fn run(f: Flags) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(f.in_flight)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 100_000);
    let mut tokens = Vec::new();
    for u in 0..f.users {
        tokens.push(login(&client, &f.url, &format!("load{u}")).await?);
    }
    eprintln!(
        "{} users logged in; sending {:.0} orders/s for {:.0} s ({:.0} s warm-up) to {}",
        f.users, f.rate, f.duration, f.warmup, f.url
    );

    let tally = Arc::new(Mutex::new(Tally { ack: Some(histogram()), ..Tally::default() }));
    let resting: Arc<Mutex<HashMap<usize, Vec<String>>>> = Arc::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(f.in_flight));
    let total = (f.rate * (f.warmup + f.duration)) as u64;
    let mut rng = Rng(f.seed.max(1) ^ 0x9e37_79b9_7f4a_7c15);
    // The watcher first (it may take a moment to subscribe), then the schedule starts.
    let trades = match (f.trades.as_deref(), f.brokers.as_deref()) {
        (Some("none"), _) => None,
        (Some("kafka") | None, Some(b)) => {
            Some(TradeWatch::kafka(b, &format!("g{run_id}-"), f.trades_wait_ms)?)
        }
        _ => Some(TradeWatch::websocket(&f.url, &f.symbol)?),
    };
    let cpu_from = own_cpu_ticks();
    let start = Instant::now() + Duration::from_millis(100);
    let record_from = start + Duration::from_secs_f64(f.warmup);
    let mut next_report = start + Duration::from_secs(1);
    // A progress bar on a terminal; a line every 5 s into a log.
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("  {elapsed:>4} [{wide_bar}] {pos}/{len} sent  {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let price = |ticks: f64| format!("{:.2}", f.mid + ticks * f.tick);
    let mut tasks = tokio::task::JoinSet::new();
    // The schedule on a thread of its own, sleeping on the OS's timer to each order's due time
    // (within tens of µs): tokio's timer rounds every deadline up to the next millisecond, which
    // charged up to a millisecond of the generator's own lateness to every order.
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel();
    let rate = f.rate;
    let schedule = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if due_tx.send((i, due)).is_err() {
                break;
            }
        }
    });
    while let Some((i, due)) = due_rx.recv().await {
        let user = (i as usize) % f.users;
        let roll = rng.below(100);
        let cancel = if roll >= 90 {
            resting.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&user).and_then(Vec::pop)
        } else {
            None
        };
        let action = match cancel {
            Some(id) => Action::Cancel(id),
            None => {
                let buy = rng.below(2) == 0;
                let (side, tif, ticks) = if (60..90).contains(&roll) {
                    // Taker: crosses five ticks through the mid, IOC.
                    (if buy { "buy" } else { "sell" }, "ioc", if buy { 5.0 } else { -5.0 })
                } else {
                    // Maker: rests one to five ticks behind the mid.
                    let away = (1 + rng.below(5)) as f64;
                    (if buy { "buy" } else { "sell" }, "gtc", if buy { -away } else { away })
                };
                Action::New(json!({
                    "client_order_id": format!("g{run_id}-{i}"),
                    "symbol": f.symbol, "side": side, "type": "limit", "time_in_force": tif,
                    "price": price(ticks), "qty": "1",
                }))
            }
        };
        let permit = permits.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let (client, url, token) = (client.clone(), f.url.clone(), tokens[user].clone());
        let (shared, resting) = (tally.clone(), resting.clone());
        tasks.spawn(async move {
            let request = match &action {
                Action::New(body) => client.post(format!("{url}/api/v1/orders")).json(body),
                Action::Cancel(id) => client.delete(format!("{url}/api/v1/orders/{id}")),
            };
            let answer = request.bearer_auth(token).send().await;
            let took = due.elapsed();
            let outcome = match answer {
                Ok(r) if r.status().as_u16() == 202 => {
                    if let (Action::New(body), Ok(v)) = (&action, r.json::<Value>().await) {
                        if let (true, Some(id)) = (due >= record_from, v["order_id"].as_str()) {
                            let mut t = shared.lock().unwrap_or_else(|p| p.into_inner());
                            t.accepted.push((user, id.to_owned()));
                            if body["time_in_force"] == "ioc" {
                                t.takers.insert(id.to_owned(), i);
                            }
                        }
                        if body["time_in_force"] == "gtc" {
                            if let Some(id) = v["order_id"].as_str() {
                                resting
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .entry(user)
                                    .or_default()
                                    .push(id.to_owned());
                            }
                        }
                    }
                    None
                }
                Ok(r) => Some(format!("http {}", r.status().as_u16())),
                Err(e) if e.is_timeout() => Some("timeout".into()),
                Err(e) if e.is_connect() => Some("connect".into()),
                Err(_) => Some("other".into()),
            };
            drop(permit);
            let mut t = shared.lock().unwrap_or_else(|p| p.into_inner());
            t.done += 1;
            if due >= record_from {
                t.recorded += 1;
                if matches!(&action, Action::New(body) if body["time_in_force"] == "ioc") {
                    t.takers_sent += 1;
                }
                t.last = Some(Instant::now());
                if let Some(h) = t.ack.as_mut() {
                    h.saturating_record(took.as_nanos() as u64);
                }
                if let Some(kind) = outcome {
                    *t.errors.entry(kind).or_default() += 1;
                }
            }
        });
        while tasks.try_join_next().is_some() {}
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            let t = tally.lock().unwrap_or_else(|p| p.into_inner());
            let errors: u64 = t.errors.values().sum();
            let phase = if Instant::now() < record_from { "warm-up" } else { "measuring" };
            let status = format!(
                "{phase}  done {}  in flight {}  errors {errors}",
                t.done,
                f.in_flight - permits.available_permits()
            );
            bar.set_position(i + 1);
            if bar.is_hidden() {
                let secs = start.elapsed().as_secs();
                if secs.is_multiple_of(5) {
                    eprintln!("  {secs:>4} s  sent {}/{total}  {status}", i + 1);
                }
            } else {
                bar.set_message(status);
            }
        }
    }
    drop(due_rx);
    schedule.join().map_err(|_| "the schedule's thread panicked".to_string())?;
    while tasks.join_next().await.is_some() {}
    // The generator's own share of a core while it sent: it runs on the machine under test.
    let own_cpu = own_cpu_ticks().zip(cpu_from).map(|(end, from)| {
        end.saturating_sub(from) as f64 / stack::cpu::ticks_per_second() / start.elapsed().as_secs_f64()
    });
    bar.finish_and_clear();
    if let Some(trades) = trades {
        // The takers' first fills, from their intended send time (those sent after the warm-up).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (source, seen, notes) = trades.stop();
        for note in &notes {
            eprintln!("  trade watcher: {note}");
        }
        let (takers, sent) = {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut t.takers), t.takers_sent)
        };
        if source == "ws" && (takers.len() as u64) < sent {
            // The feed names a taker by its exchange id, which only a 202 tells: a taker whose
            // answer was an error (and which may still have traded) is not in the figures.
            eprintln!(
                "  order → trade: {} of {sent} recorded takers had no exchange id (their answer was an error) and are left out",
                sent - takers.len() as u64
            );
        }
        let mut h = histogram();
        for (key, at) in &seen {
            // Kafka names the taker by client id (`<prefix><i>`), the WebSocket by exchange id.
            let Some(i) =
                key.parse::<u64>().ok().filter(|_| source == "kafka").or_else(|| takers.get(key).copied())
            else {
                continue;
            };
            let due = start + Duration::from_secs_f64(i as f64 / f.rate);
            if due >= record_from {
                h.saturating_record(at.saturating_duration_since(due).as_nanos() as u64);
            }
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
        println!(
            "order → trade on {} ({} takers that traded): p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
            if source == "kafka" { "the trades topic" } else { "the WebSocket feed" },
            h.len(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1e6
        );
        if let Some(dir) = &f.hgrm {
            let path = dir.join(format!("trade-{:.0}.hgrm", f.rate));
            perf::report::write_hgrm(&path, &h, 1e6, "Value(ms)").map_err(|e| e.to_string())?;
        }
    }
    // Where the time goes: each hop of a sample of the accepted orders, as the matcher stored it.
    let accepted = std::mem::take(&mut tally.lock().unwrap_or_else(|p| p.into_inner()).accepted);
    let mut per_hop = hop_sample(&client, &f.url, &tokens, &accepted).await;
    let mut rows = String::new();
    for ((name, _, _), xs) in HOPS.iter().zip(per_hop.iter_mut()) {
        xs.sort_by(f64::total_cmp);
        let (p50, p90, p99) = (quantile(xs, 0.5), quantile(xs, 0.9), quantile(xs, 0.99));
        println!("hop {name} ({} orders): p50 {p50:.3} ms, p90 {p90:.3}, p99 {p99:.3}", xs.len());
        rows.push_str(&format!("{name}\t{p50:.4}\t{p90:.4}\t{p99:.4}\n"));
    }
    if let Some(dir) = &f.hgrm {
        let path = dir.join(format!("hops-{:.0}.tsv", f.rate));
        std::fs::write(&path, format!("hop\tp50_ms\tp90_ms\tp99_ms\n{rows}")).map_err(|e| e.to_string())?;
    }
    let t = tally.lock().unwrap_or_else(|p| p.into_inner());
    let h = t.ack.as_ref().ok_or("no histogram")?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    let errors: u64 = t.errors.values().sum();
    if let Some(share) = own_cpu {
        println!(
            "generator: {:.1} % of one core while sending (its own CPU, /proc/self/stat)",
            share * 100.0
        );
    }
    println!("| offered /s | achieved /s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---|");
    let kinds: Vec<String> = t.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    println!(
        "| {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
        f.rate,
        (t.recorded - errors) as f64
            / t.last.map_or(f.duration, |l| l.duration_since(record_from).as_secs_f64().max(f.duration)),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1e6,
        if kinds.is_empty() { "0".to_owned() } else { kinds.join(", ") }
    );
    if let Some(dir) = &f.hgrm {
        let path = dir.join(format!("ack-{:.0}.hgrm", f.rate));
        perf::report::write_hgrm(&path, h, 1e6, "Value(ms)").map_err(|e| e.to_string())?;
        eprintln!("  wrote {}", path.display());
    }
    Ok(())
}

/// Notes when each of this run's takers first traded: a consumer of the `trades` topic (every
/// partition, from its end; keyed by the taker's client id index), or a WebSocket session on the
/// public `trades:<symbol>` channel (keyed by the taker's exchange id, the first part of the trade
/// id).
struct TradeWatch {
    source: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Each taker's first fill by its key, and what went wrong on the way (trades may be missing).
    thread: std::thread::JoinHandle<(HashMap<String, Instant>, Vec<String>)>,
}

impl TradeWatch {
    fn kafka(brokers: &str, prefix: &str, wait_ms: u32) -> Result<TradeWatch, String> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message as _;
        let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "load-gen")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", wait_ms.max(1).to_string())
            .create()
            .map_err(|e| e.to_string())?;
        // Every partition (the matcher writes each symbol's trades to one of them), at its end.
        let md =
            consumer.fetch_metadata(Some("trades"), Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let partitions =
            md.topics().first().filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err("the trades topic has no partitions (is the stack up?)".into());
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset("trades", p, rdkafka::Offset::End).map_err(|e| e.to_string())?;
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, prefix) = (stop.clone(), prefix.to_owned());
        let thread = std::thread::spawn(move || {
            let mut seen = HashMap::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(Ok(msg)) = consumer.poll(Duration::from_millis(50)) else { continue };
                let now = Instant::now();
                let Some(v) = msg.payload().and_then(|p| serde_json::from_slice::<Value>(p).ok()) else {
                    continue;
                };
                let taker = v["taker_client_order_id"].as_str().and_then(|c| c.strip_prefix(prefix.as_str()));
                if let Some(i) = taker {
                    seen.entry(i.to_owned()).or_insert(now);
                }
            }
            (seen, Vec::new())
        });
        Ok(TradeWatch { source: "kafka", stop, thread })
    }

    /// Subscribes to `trades:<symbol>` on `<url>/ws` and waits for the subscription to be
    /// confirmed, so no trade of the run is missed.
    fn websocket(url: &str, symbol: &str) -> Result<TradeWatch, String> {
        use tungstenite::Message;
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("--url {url}: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!("--url {url}: the WebSocket trade watcher speaks plain http/ws only"));
        }
        let host = parsed.host_str().ok_or(format!("--url {url}: no host"))?.to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let ws_url = format!("ws://{host}:{port}{}/ws", parsed.path().trim_end_matches('/'));
        let stream =
            std::net::TcpStream::connect((host.as_str(), port)).map_err(|e| format!("{host}:{port}: {e}"))?;
        // The handshake may take a while on a busy machine; short reads only once it is done.
        stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        let (mut ws, _) = tungstenite::client::client(ws_url.as_str(), stream)
            .map_err(|e| format!("the WebSocket feed at {ws_url}: {e}"))?;
        ws.get_mut().set_read_timeout(Some(Duration::from_millis(50))).map_err(|e| e.to_string())?;
        let channel = format!("trades:{symbol}");
        ws.send(Message::text(json!({"op": "subscribe", "channel": channel}).to_string()))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if Instant::now() > deadline {
                return Err(format!("no answer to the {channel} subscription within 5 s"));
            }
            match ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    match v["type"].as_str() {
                        Some("subscribed") => break,
                        Some("error") => return Err(format!("subscribing to {channel}: {}", v["message"])),
                        _ => {}
                    }
                }
                Ok(_) => {}
                Err(e) if perf::read_timed_out(&e) => {}
                Err(e) => return Err(format!("the WebSocket feed: {e}")),
            }
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut seen, mut notes) = (HashMap::new(), Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match ws.read() {
                    Ok(Message::Text(t)) => {
                        let now = Instant::now();
                        let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                        let taker =
                            v["trade_id"].as_str().and_then(|id| id.split_once('-')).map(|(cmd, _)| cmd);
                        match (v["type"].as_str(), taker) {
                            (Some("trade"), Some(taker)) => {
                                seen.entry(taker.to_owned()).or_insert(now);
                            }
                            // Trades in between are lost to this session: the figures lack them.
                            (Some("overflow"), _) => {
                                notes.push(format!("the feed overflowed: {}", v["message"]))
                            }
                            (Some("status"), _) if v["feed"] == "down" => {
                                notes.push("the gateway's feed lost the broker".into())
                            }
                            _ => {}
                        }
                    }
                    Ok(Message::Close(_)) => {
                        notes.push("the gateway closed the session early".into());
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if perf::read_timed_out(&e) => {}
                    Err(e) => {
                        notes.push(format!("the session failed early: {e}"));
                        break;
                    }
                }
            }
            let _ = ws.close(None);
            (seen, notes)
        });
        Ok(TradeWatch { source: "ws", stop, thread })
    }

    /// Stops watching: the source (`kafka` or `ws`), each taker's first fill by its key, and what
    /// went wrong on the way.
    fn stop(self) -> (&'static str, HashMap<String, Instant>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (seen, notes) = self.thread.join().unwrap_or_default();
        (self.source, seen, notes)
    }
}

/// This process's CPU time so far (user + system, every thread), in clock ticks.
fn own_cpu_ticks() -> Option<u64> {
    let line = std::fs::read_to_string("/proc/self/stat").ok()?;
    stack::cpu::parse_stat(&line).map(|s| s.ticks)
}
