//! `flow-probe`: a first, modest-rate look at latency through the running stack (`./lab up`).
//!
//! Sends `--count` limit orders to order-svc at `--rate` per second — alternately sell and buy at
//! one price, so every second order trades — timing each acknowledgement from its *intended* send
//! time (so a slow answer delays no measurement). Then it reads each order's hops from the
//! matcher front and prints percentiles of: ack (client → 202), edge (gateway in → published, when
//! `--order-svc` is a gateway or nginx), broker (published → consumed),
//! book (consumed → matched), persist (matched → persisted), and order → trade (published →
//! persisted, for the orders that traded). This is not the open-loop load generator of
//! DESIGN.md §6 (one sender thread; no progress bar): it is the smoke-level figure.
//!
//! Flags: `--order-svc URL` (`http://127.0.0.1:9101`), `--matcher URL` (`http://127.0.0.1:9201`),
//! `--rate N` (100), `--count N` (2000), `--symbol S` (`ABC`), `--price P` (`100.00`), `--tokens
//! T1,T2` (session tokens or API keys, sent as `Authorization: Bearer`, order *i* with token
//! *i mod n*: through a gateway or nginx, where accounts are on, give two users' tokens, so sells
//! and buys come from different accounts and trade).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use perf::flag;
use serde_json::Value;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn row(name: &str, h: &Histogram<u64>) {
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: flow-probe [--order-svc URL] [--matcher URL] [--rate N] [--count N] [--symbol S] [--price P]");
        return;
    }
    let order_svc = flag(&args, "--order-svc", "http://127.0.0.1:9101");
    let matcher = flag(&args, "--matcher", "http://127.0.0.1:9201");
    let rate: f64 = flag(&args, "--rate", "100").parse().expect("--rate: a number");
    let count: usize = flag(&args, "--count", "2000").parse().expect("--count: a number");
    let symbol = flag(&args, "--symbol", "ABC");
    let price = flag(&args, "--price", "100.00");
    let tokens: Vec<String> =
        flag(&args, "--tokens", "").split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect();
    let run = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let client =
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    let mut ack = histogram();
    let mut ids = Vec::with_capacity(count);
    let mut failed = 0;
    let start = Instant::now();
    for i in 0..count {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = intended.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let side = if i % 2 == 0 { "sell" } else { "buy" };
        let body = format!(
            r#"{{"client_order_id":"p{run}-{i}","symbol":"{symbol}","side":"{side}","type":"limit","price":"{price}","qty":"1"}}"#
        );
        let mut request =
            client.post(format!("{order_svc}/api/v1/orders")).header("content-type", "application/json");
        if !tokens.is_empty() {
            request = request.bearer_auth(&tokens[i % tokens.len()]);
        }
        let answer = request.body(body).send();
        ack.saturating_record(intended.elapsed().as_nanos() as u64);
        match answer.ok().filter(|r| r.status().as_u16() == 202).and_then(|r| r.json::<Value>().ok()) {
            Some(v) => ids.push(v["order_id"].as_str().unwrap_or_default().to_owned()),
            None => failed += 1,
        }
        if (i + 1) % (count / 10).max(1) == 0 {
            eprintln!("  sent {}/{count}", i + 1);
        }
    }
    let sent_for = start.elapsed();
    eprintln!("reading hops of {} orders from {matcher} ...", ids.len());
    std::thread::sleep(Duration::from_secs(1));
    let (mut edge, mut broker, mut book, mut persist, mut to_trade) =
        (histogram(), histogram(), histogram(), histogram(), histogram());
    for id in &ids {
        let Ok(v) =
            client.get(format!("{matcher}/api/v1/orders/{id}")).send().and_then(|r| r.json::<Value>())
        else {
            continue;
        };
        let hop = |k: &str| v["hops"][k].as_u64();
        if let (Some(p), Some(c), Some(m), Some(s)) =
            (hop("published_ns"), hop("consumed_ns"), hop("matched_ns"), hop("persisted_ns"))
        {
            if let Some(g) = hop("gateway_ns") {
                edge.saturating_record(p.saturating_sub(g).max(1));
            }
            broker.saturating_record(c.saturating_sub(p).max(1));
            book.saturating_record(m.saturating_sub(c).max(1));
            persist.saturating_record(s.saturating_sub(m).max(1));
            if v["status"] == "filled" && v["fills"].as_array().is_some_and(|f| !f.is_empty()) {
                to_trade.saturating_record(s.saturating_sub(p).max(1));
            }
        }
    }
    println!(
        "# flow-probe: {count} orders at {rate}/s to {order_svc} ({:.1} s, {failed} failed)\n",
        sent_for.as_secs_f64()
    );
    println!("| hop | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|");
    row("ack (client → 202, from intended send)", &ack);
    if !edge.is_empty() {
        row("edge (gateway in → published by order-svc)", &edge);
    }
    row("broker (published → consumed)", &broker);
    row("book (consumed → matched)", &book);
    row("persist (matched → Redis + Kafka acked)", &persist);
    row("order → trade (published → persisted, traded orders)", &to_trade);
}
