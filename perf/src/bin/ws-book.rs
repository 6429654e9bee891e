//! `ws-book`: prints a symbol's live book from the gateway's WebSocket (gateway/WEBSOCKET.md),
//! following the documented sync rules: a snapshot replaces the book; an update applies only if
//! its `prev_sequence` is the book's sequence, anything else is a gap, healed by subscribing
//! again (a fresh snapshot).
//!
//! ```text
//! cargo run -p perf --bin ws-book -- [URL] [SYMBOL] [DEPTH]
//! cargo run -p perf --bin ws-book -- ws://127.0.0.1:8080/ws ABC 10
//! ```
//! Redraws the top `DEPTH` levels (default 10) on every update; Ctrl-C stops it. Add
//! `TOKEN=<session token>` to the environment to send `Authorization: Bearer` (not needed for
//! books).

use std::collections::BTreeMap;
use std::net::TcpStream;

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

/// Price (as an exact integer key: the decimal's digits, scaled to 8 places) → (price, qty) text.
type Side = BTreeMap<i128, (String, String)>;

fn key(price: &str) -> i128 {
    let (int, frac) = price.split_once('.').unwrap_or((price, ""));
    let frac = format!("{frac:0<8}");
    format!("{int}{}", &frac[..8]).parse().unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/ws".to_owned());
    let symbol = args.next().unwrap_or_else(|| "ABC".to_owned());
    let depth: usize = args.next().and_then(|d| d.parse().ok()).unwrap_or(10);
    let channel = format!("book:{symbol}");

    let mut req = url.as_str().into_client_request()?;
    if let Ok(token) = std::env::var("TOKEN") {
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    }
    let host = req.uri().host().unwrap_or("127.0.0.1").to_owned();
    let port = req.uri().port_u16().unwrap_or(80);
    let (mut ws, _) = tungstenite::client::client(req, TcpStream::connect((host.as_str(), port))?)?;
    let subscribe = json!({"op": "subscribe", "channel": channel}).to_string();
    ws.send(Message::text(subscribe.clone()))?;

    let (mut bids, mut asks): (Side, Side) = Default::default();
    let mut sequence: Option<u64> = None;
    let mut gaps = 0u64;
    loop {
        let text = match ws.read()? {
            Message::Text(t) => t,
            Message::Close(c) => {
                eprintln!("closed: {c:?}");
                return Ok(());
            }
            _ => continue,
        };
        let v: Value = serde_json::from_str(&text)?;
        match v["type"].as_str() {
            Some("snapshot") if v["channel"] == channel => {
                bids.clear();
                asks.clear();
                for (side, name) in [(&mut bids, "bids"), (&mut asks, "asks")] {
                    for l in v[name].as_array().into_iter().flatten() {
                        let (p, q) = (l[0].as_str().unwrap_or(""), l[1].as_str().unwrap_or(""));
                        side.insert(key(p), (p.to_owned(), q.to_owned()));
                    }
                }
                sequence = v["sequence"].as_u64();
            }
            Some("update") if v["channel"] == channel => {
                let Some(seq) = sequence else { continue }; // waiting for a snapshot
                let (new, prev) = (v["sequence"].as_u64().unwrap_or(0), v["prev_sequence"].as_u64());
                if new <= seq {
                    continue; // older than the book
                }
                if prev != Some(seq) {
                    // A gap: something is missing. Start over from a fresh snapshot.
                    gaps += 1;
                    sequence = None;
                    ws.send(Message::text(json!({"op": "unsubscribe", "channel": channel}).to_string()))?;
                    ws.send(Message::text(subscribe.clone()))?;
                    continue;
                }
                for c in v["changes"].as_array().into_iter().flatten() {
                    let (side, p, q) = (
                        c[0].as_str().unwrap_or(""),
                        c[1].as_str().unwrap_or(""),
                        c[2].as_str().unwrap_or(""),
                    );
                    let levels = if side == "buy" { &mut bids } else { &mut asks };
                    if q.trim_start_matches(['0', '.']).is_empty() {
                        levels.remove(&key(p));
                    } else {
                        levels.insert(key(p), (p.to_owned(), q.to_owned()));
                    }
                }
                sequence = Some(new);
            }
            Some("overflow") => sequence = None, // a fresh snapshot follows
            Some("status") => eprintln!("feed {}", v["feed"]),
            Some("error") => eprintln!("error: {}", v["message"]),
            _ => continue,
        }
        // Redraw: asks (best last, nearest the spread), then bids (best first).
        println!("\x1b[2J\x1b[H{symbol} sequence {} (gaps healed: {gaps})", sequence.unwrap_or(0));
        println!("{:>14} {:>12}", "price", "qty");
        for (p, q) in asks.values().take(depth).collect::<Vec<_>>().into_iter().rev() {
            println!("{p:>14} {q:>12}  ask");
        }
        println!("{:-^28}", "");
        for (p, q) in bids.values().rev().take(depth) {
            println!("{p:>14} {q:>12}  bid");
        }
    }
}
