//! `ws-fanout`: what the WebSocket fan-out costs. Opens `--sessions` sockets to one gateway, each
//! subscribed to `book:<SYMBOL>`, while a Kafka consumer of its own reads `order-events`; for
//! every book update a session receives, the latency is the time since this process saw the
//! update's event (by symbol sequence) on Kafka — the gateway's consumer, its feed, the session
//! queues and the socket writes, at that many sessions. Drive an order flow beside it (e.g.
//! `load-gen --rate 100`); bounded by `--seconds`; loopback only.
//!
//! ```text
//! ws-fanout [--ws ws://127.0.0.1:9001/ws] [--brokers 127.0.0.1:19092] [--sessions 500]
//!           [--seconds 20] [--symbol ABC]
//! ```

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use perf::flag;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tungstenite::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = flag(&args, "--ws", "ws://127.0.0.1:9001/ws");
    let brokers = flag(&args, "--brokers", "127.0.0.1:19092");
    let sessions: usize = flag(&args, "--sessions", "500").parse()?;
    let seconds: u64 = flag(&args, "--seconds", "20").parse()?;
    let symbol = flag(&args, "--symbol", "ABC");
    if sessions == 0 || sessions > 10_000 || seconds == 0 || seconds > 600 {
        return Err("bounded runs only: 1-10000 sessions, 1-600 seconds".into());
    }

    // When this process first saw each event of the symbol on Kafka, by sequence.
    let seen: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let consumer_thread = {
        let (seen, stop, symbol) = (seen.clone(), stop.clone(), symbol.clone());
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "ws-fanout")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "1")
            .create()?;
        // Every partition, at its end (the symbol's events are all in one of them).
        let md = consumer.fetch_metadata(Some("order-events"), Duration::from_secs(5))?;
        let partitions =
            md.topics().first().filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err("the order-events topic has no partitions (is the stack up?)".into());
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset("order-events", p, Offset::End)?;
        }
        consumer.assign(&tpl)?;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(Ok(msg)) = consumer.poll(Duration::from_millis(50)) else { continue };
                let now = Instant::now();
                // A message is a pack of events, one a line.
                for event in common::envelope::unpack_events(msg.payload().unwrap_or_default()) {
                    let Ok(v) = serde_json::from_slice::<Value>(event) else { continue };
                    if v["symbol"] == symbol.as_str() {
                        if let Some(seq) = v["seq"].as_u64() {
                            seen.lock().unwrap_or_else(|p| p.into_inner()).entry(seq).or_insert(now);
                        }
                    }
                }
            }
        })
    };

    let connected = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (host, port) = {
        let rest = url.trim_start_matches("ws://");
        let hostport = rest.split('/').next().unwrap_or(rest);
        let (h, p) = hostport.rsplit_once(':').ok_or("--ws needs host:port")?;
        (h.to_owned(), p.parse::<u16>()?)
    };
    let workers: Vec<_> = (0..sessions)
        .map(|_| {
            let (url, host, symbol, connected) =
                (url.clone(), host.clone(), symbol.clone(), connected.clone());
            std::thread::Builder::new().stack_size(256 * 1024).spawn(move || -> Vec<(u64, Instant)> {
                let mut got = Vec::new();
                let Ok(stream) = TcpStream::connect((host.as_str(), port)) else { return got };
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let Ok((mut ws, _)) = tungstenite::client::client(url.as_str(), stream) else { return got };
                let sub = json!({"op": "subscribe", "channel": format!("book:{symbol}")}).to_string();
                if ws.send(Message::text(sub)).is_err() {
                    return got;
                }
                connected.fetch_add(1, Ordering::Relaxed);
                while Instant::now() < deadline {
                    match ws.read() {
                        Ok(Message::Text(t)) => {
                            let now = Instant::now();
                            if let Ok(v) = serde_json::from_str::<Value>(&t) {
                                if v["type"] == "update" {
                                    if let Some(seq) = v["sequence"].as_u64() {
                                        got.push((seq, now));
                                    }
                                }
                            }
                        }
                        Ok(Message::Close(_)) => break,
                        Ok(_) => {}
                        Err(e) if perf::read_timed_out(&e) => {}
                        Err(_) => break,
                    }
                }
                let _ = ws.close(None);
                got
            })
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(2));
    eprintln!(
        "{} of {sessions} sessions subscribed; measuring for {seconds} s",
        connected.load(Ordering::Relaxed)
    );
    let results: Vec<Vec<(u64, Instant)>> =
        workers.into_iter().map(|w| w.join().unwrap_or_default()).collect();
    stop.store(true, Ordering::Relaxed);
    let _ = consumer_thread.join();

    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    let (mut matched, mut early, mut total) = (0u64, 0u64, 0u64);
    for (seq, at) in results.iter().flatten() {
        total += 1;
        let Some(k) = seen.get(seq) else { continue };
        matched += 1;
        match at.checked_duration_since(*k) {
            Some(d) => h.saturating_record(d.as_nanos() as u64),
            None => early += 1,
        }
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    println!("| sessions | updates received | per session | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {total} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        connected.load(Ordering::Relaxed),
        total as f64 / sessions as f64,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1e6
    );
    eprintln!("{matched} of {total} updates matched to an event seen on Kafka; {early} arrived before this process saw the event");
    Ok(())
}
