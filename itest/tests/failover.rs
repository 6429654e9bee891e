//! Two matchers share the `orders` partitions (`--share-partitions`, leases in Redis): each owns
//! a share (symbols) and rebuilds only those books; one is SIGKILLed and the other takes its
//! partitions over once the leases expire — from the snapshot and the log — and matches against
//! the book it rebuilt; the first comes back and the partitions are shared again. Nothing is
//! counted twice on the topics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use itest::{http, wait_until, Service, Stack};
use serde_json::Value;

const MATCHERS: [&str; 2] = ["matcher", "matcher-2"];

fn stack() -> Stack {
    Stack::start_with_matcher_args(2, &["--snapshot-every", "3", "--lease-ms", "3000"])
}

fn post(svc: &Service, body: &str) -> String {
    let r = http()
        .post(svc.url("/api/v1/orders"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    let r = r.send().unwrap();
    assert_eq!(r.status().as_u16(), 202, "{body}");
    r.json::<Value>().unwrap()["order_id"].as_str().unwrap().to_owned()
}

fn order(client: &str, symbol: &str, side: &str, price: &str, qty: &str) -> String {
    format!(
        r#"{{"client_order_id":"{client}","symbol":"{symbol}","side":"{side}","type":"limit","price":"{price}","qty":"{qty}"}}"#
    )
}

fn get(svc: &Service, path: &str) -> Value {
    http().get(svc.url(path)).send().ok().and_then(|r| r.json().ok()).unwrap_or(Value::Null)
}

/// The order as a matcher front has it, once `done` says so (else the matchers' logs).
fn order_when(
    s: &Stack,
    front: &Service,
    id: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(&format!("order {id}"), timeout, || {
        last = get(front, &format!("/api/v1/orders/{id}"));
        done(&last)
    });
    if ok.is_err() {
        for m in MATCHERS {
            let log = std::fs::read_to_string(s.log_path(m)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("GET /")).collect();
            eprintln!("---- {m}\n{}", lines[lines.len().saturating_sub(60)..].join("\n"));
        }
    }
    assert!(ok.is_ok(), "order {id}: last seen {last}");
    last
}

/// `matcher_owns_partition{partition="p"}` of a matcher (`None`: it does not answer).
fn owns(m: &Service, p: i32) -> Option<bool> {
    let text = http().get(m.url("/metrics")).send().ok()?.text().ok()?;
    let needle = format!("partition=\"{p}\"");
    let line = text.lines().find(|l| l.starts_with("matcher_owns_partition{") && l.contains(&needle));
    Some(line.and_then(|l| l.rsplit(' ').next()).is_some_and(|v| v == "1"))
}

/// Which matcher owns each partition, once each owns exactly one.
fn split(s: &Stack) -> [&'static str; 2] {
    let mut owners = [""; 2];
    let ok = wait_until("each matcher owns one partition", Duration::from_secs(60), || {
        for p in 0..2 {
            let holders: Vec<&str> =
                MATCHERS.into_iter().filter(|m| owns(&s.svc(m), p) == Some(true)).collect();
            if holders.len() != 1 {
                return false;
            }
            owners[p as usize] = holders[0];
        }
        owners[0] != owners[1]
    });
    assert!(ok.is_ok(), "{}\n{}", s.tail("matcher"), s.tail("matcher-2"));
    owners
}

#[test]
fn a_matcher_takes_over_a_dead_one_s_partitions_and_gives_them_back() {
    let mut s = stack();
    let entry = s.svc("order-svc-1");
    let owners = split(&s);

    // A resting bid on every symbol; its order id says its partition.
    // (symbol, price, lot)
    let symbols = [("ABC", "100.00", 1), ("DEF", "50.00", 10), ("XYZ", "2500", 1)];
    let lots = |lot: u64, n: u64| (lot * n).to_string();
    let mut resting: HashMap<&str, (String, i32)> = HashMap::new();
    for (symbol, price, lot) in symbols {
        let id = post(&entry, &order(&format!("r-{symbol}"), symbol, "buy", price, &lots(lot, 10)));
        let partition = (id.parse::<u64>().unwrap() >> 48) as i32;
        let front = s.svc(owners[partition as usize]);
        order_when(&s, &front, &id, Duration::from_secs(30), |o| o["status"] == "resting");
        resting.insert(symbol, (id, partition));
    }
    // A trade on each, so both partitions have history behind their snapshots.
    for (symbol, price, lot) in symbols {
        let id = post(&entry, &order(&format!("t1-{symbol}"), symbol, "sell", price, &lots(lot, 1)));
        order_when(&s, &s.svc("matcher"), &id, Duration::from_secs(30), |o| o["status"] == "filled");
    }

    // The owner of XYZ's partition dies.
    let moved = resting["XYZ"].1;
    let (dead, survivor) = (owners[moved as usize], owners[1 - moved as usize]);
    s.kill(dead);
    let killed = Instant::now();
    let taker = post(&entry, &order("t2-XYZ", "XYZ", "sell", "2500", "2"));
    let front = s.svc(survivor);
    let filled = order_when(&s, &front, &taker, Duration::from_secs(60), |o| o["status"] == "filled");
    let failover = killed.elapsed();
    eprintln!("failover: {dead} killed → an order on its partition filled by {survivor} in {failover:?}");
    // It traded with the bid placed before the kill: the survivor rebuilt that book.
    let (xyz_bid, _) = &resting["XYZ"];
    let bid = order_when(&s, &front, xyz_bid, Duration::from_secs(5), |o| o["filled_qty"] == "3");
    assert_eq!(bid["status"], "partially_filled", "{bid}");
    assert_eq!(filled["fills"][0]["price"], "2500.0", "{filled}");
    assert_eq!(owns(&front, moved), Some(true));
    assert_eq!(owns(&front, 1 - moved), Some(true), "and it kept its own");

    // The dead one comes back: the partitions are shared again, and both books still match.
    s.start_again(dead);
    let again = split(&s);
    eprintln!("after the return: partition 0 → {}, partition 1 → {}", again[0], again[1]);
    for (symbol, price, lot) in symbols {
        let id = post(&entry, &order(&format!("t3-{symbol}"), symbol, "sell", price, &lots(lot, 1)));
        let (_, p) = resting[symbol];
        order_when(&s, &s.svc(again[p as usize]), &id, Duration::from_secs(60), |o| o["status"] == "filled");
    }
    let abc = order_when(&s, &s.svc("matcher"), &resting["ABC"].0, Duration::from_secs(10), |o| {
        o["filled_qty"] == "2"
    });
    assert_eq!(abc["status"], "partially_filled");

    // Each trade and each event once on the topics, however often the partitions moved.
    let trades = s.counted("trades", "trade_id", Duration::from_secs(4));
    assert_eq!(trades.len(), 3 + 1 + 3, "{trades:?}");
    for (topic, seen) in
        [("trades", trades), ("order-events", s.counted("order-events", "event_id", Duration::from_secs(4)))]
    {
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{topic} holds these more than once: {twice:?}");
    }
}
