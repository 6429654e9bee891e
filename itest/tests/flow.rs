//! Orders through the whole native pipeline: order-svc → broker → pinned matcher → Redis and the
//! `trades` topic → the matcher's HTTP front. And a SIGKILLed matcher that comes back with the
//! same book and counts no trade twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use itest::{http, wait_until, Service, Stack};
use serde_json::Value;

fn stack() -> Stack {
    Stack::start(1, 0, false)
}

fn order_svc(s: &Stack) -> Service {
    s.svc("order-svc-1")
}

fn post(svc: &Service, path: &str, body: &str) -> Value {
    let r = http()
        .post(svc.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{path} {body}");
    r.json().unwrap()
}

fn get(svc: &Service, path: &str) -> (u16, Value) {
    let r = http().get(svc.url(path)).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// Polls an order until `done` says so.
fn order_when(svc: &Service, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(&format!("order {id}"), Duration::from_secs(30), || {
        let (status, v) = get(svc, &format!("/api/v1/orders/{id}"));
        last = v;
        status == 200 && done(&last)
    });
    assert!(ok.is_ok(), "order {id} never got there; last seen {last}");
    last
}

fn v1(client: &str, side: &str, price: &str, qty: &str) -> String {
    format!(
        r#"{{"client_order_id":"{client}","symbol":"ABC","side":"{side}","type":"limit","price":"{price}","qty":"{qty}"}}"#
    )
}

#[test]
fn crossing_orders_trade_and_every_read_shows_it() {
    let s = stack();
    let sell = post(&order_svc(&s), "/api/v1/orders", &v1("s-1", "sell", "100.00", "5"));
    let sell_id = sell["order_id"].as_str().unwrap().to_owned();
    order_when(&s.svc("matcher"), &sell_id, |o| o["status"] == "resting");
    let buy = post(&order_svc(&s), "/order", r#"{"id":"ui-1","symbol":"ABC","price":101,"qty":3}"#);
    let buy_id = buy["order_id"].as_str().unwrap().to_owned();

    // The persisted hop is stamped after the batch's writes, so it may trail the status.
    let buy_order = order_when(&s.svc("matcher"), &buy_id, |o| {
        o["status"] == "filled" && o["hops"]["persisted_ns"].as_u64().is_some()
    });
    assert_eq!(buy_order["filled_qty"], "3");
    assert_eq!(buy_order["fills"].as_array().unwrap().len(), 1);
    assert_eq!(buy_order["fills"][0]["price"], "100.00", "the trade is at the resting price");
    for hop in ["published_ns", "consumed_ns", "matched_ns", "persisted_ns"] {
        assert!(buy_order["hops"][hop].as_u64().is_some_and(|t| t > 0), "hop {hop}: {buy_order}");
    }
    assert!(buy_order["hops"]["gateway_ns"].is_null(), "order-svc called directly: no gateway hop");
    let sell_order = order_when(&s.svc("matcher"), &sell_id, |o| o["status"] == "partially_filled");
    assert_eq!(sell_order["filled_qty"], "3");

    // Retention: the filled order's keys expire (a day by default); the open order's and every
    // client id still in the book's duplicate window never do.
    let ttl = |key: &str| s.redis(&["TTL", key]).trim_start_matches(':').parse::<i64>().unwrap();
    for key in [format!("order:{buy_id}"), format!("fills:{buy_id}"), "trade:anonymous:ui-1".to_owned()] {
        assert!((86_000..=86_400).contains(&ttl(&key)), "{key}: TTL {}", ttl(&key));
    }
    for key in [format!("order:{sell_id}"), "client:anonymous:ABC:ui-1".to_owned()] {
        assert_eq!(ttl(&key), -1, "{key} has no expiry");
    }

    // The original lab's lookup and shape.
    let (_, t) = get(&s.svc("matcher"), "/trade/ui-1");
    assert_eq!(t["found"], true, "{t}");
    assert_eq!(t["order_id"], "ui-1");
    assert_eq!(t["trade"]["order_id"], "ui-1");
    assert_eq!(t["trade"]["price"], 100.0);
    assert_eq!(t["trade"]["qty"], 3, "a whole quantity is an integer, as the original lab had it");
    assert!(t["trade"]["ts"].as_f64().is_some());
    let (_, missing) = get(&s.svc("matcher"), "/trade/nope");
    assert_eq!(missing, serde_json::json!({"found": false, "order_id": "nope"}));

    // By client id, book, trades, symbols.
    let (status, by_client) = get(&s.svc("matcher"), "/api/v1/orders?symbol=ABC&client_order_id=s-1");
    assert_eq!((status, by_client["order_id"].as_str()), (200, Some(sell_id.as_str())));
    let (_, book) = get(&s.svc("matcher"), "/api/v1/book/ABC?depth=5");
    assert_eq!(book["asks"][0], serde_json::json!(["100.00", "2"]), "{book}");
    assert!(book["sequence"].as_u64().unwrap() > 0);
    let (_, trades) = get(&s.svc("matcher"), "/api/v1/trades?symbol=ABC&limit=10");
    assert_eq!(trades["trades"].as_array().unwrap().len(), 1, "{trades}");
    let (_, symbols) = get(&s.svc("matcher"), "/api/v1/symbols");
    assert!(symbols["symbols"].as_array().unwrap().iter().any(|s| s["symbol"] == "ABC"));
    let (status, bad) = get(&s.svc("matcher"), "/api/v1/book/NOPE");
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("unknown_symbol")));

    // One message per fill on `trades`.
    let msgs = s.read_all("trades", 2, 1, Duration::from_secs(20)).unwrap();
    assert_eq!(msgs.len(), 1);
    let fill: Value = serde_json::from_slice(&msgs[0].2).unwrap();
    assert_eq!(
        (fill["type"].as_str(), fill["price"].as_str(), fill["qty"].as_str()),
        (Some("fill"), Some("100.00"), Some("3"))
    );

    // A duplicate client id is a rejected status, one order only.
    let dup = post(&order_svc(&s), "/api/v1/orders", &v1("s-1", "sell", "100.00", "1"));
    let dup_order =
        order_when(&s.svc("matcher"), dup["order_id"].as_str().unwrap(), |o| o["status"] == "rejected");
    assert_eq!(dup_order["reject_reason"], "duplicate_client_order_id");

    // Cancel: the outcome shows on the order.
    let r = http().delete(order_svc(&s).url(&format!("/api/v1/orders/{sell_id}"))).send().unwrap();
    assert_eq!(r.status().as_u16(), 202);
    order_when(&s.svc("matcher"), &sell_id, |o| o["status"] == "canceled");
    let (_, book) = get(&s.svc("matcher"), "/api/v1/book/ABC");
    assert_eq!(book["asks"].as_array().map(Vec::len), Some(0), "{book}");
    let metrics = http().get(s.svc("matcher").url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("matcher_commands_total") && metrics.contains("matcher_input_ring_occupancy"));
}

#[test]
fn a_killed_matcher_comes_back_with_its_book_and_counts_no_trade_twice() {
    let mut s = stack();
    let resting = post(&order_svc(&s), "/api/v1/orders", &v1("r-1", "buy", "99.00", "4"));
    let resting_id = resting["order_id"].as_str().unwrap().to_owned();
    order_when(&s.svc("matcher"), &resting_id, |o| o["status"] == "resting");
    let first = post(&order_svc(&s), "/api/v1/orders", &v1("t-1", "sell", "99.00", "1"));
    order_when(&s.svc("matcher"), first["order_id"].as_str().unwrap(), |o| o["status"] == "filled");

    s.kill("matcher"); // SIGKILL
                       // Orders keep arriving while it is down: they wait in the log.
    let second = post(&order_svc(&s), "/api/v1/orders", &v1("t-2", "sell", "99.00", "2"));
    s.start_again("matcher");

    let second_order =
        order_when(&s.svc("matcher"), second["order_id"].as_str().unwrap(), |o| o["status"] == "filled");
    assert_eq!(second_order["fills"][0]["price"], "99.00");
    let resting_order = order_when(&s.svc("matcher"), &resting_id, |o| o["filled_qty"] == "3");
    assert_eq!(
        resting_order["status"], "partially_filled",
        "the book was rebuilt: the resting order is still there"
    );
    let third = post(&order_svc(&s), "/api/v1/orders", &v1("t-3", "sell", "99.00", "5"));
    let third_order = order_when(&s.svc("matcher"), third["order_id"].as_str().unwrap(), |o| {
        o["status"] == "resting" || o["status"] == "partially_filled"
    });
    assert_eq!(third_order["filled_qty"], "1");
    order_when(&s.svc("matcher"), &resting_id, |o| o["status"] == "filled");

    // On `trades`, a message emitted again carries the same trade id; per order, fills ≤ qty.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut msgs = Vec::new();
    while Instant::now() < deadline && msgs.len() < 3 {
        msgs = s.read_all("trades", 2, 10, Duration::from_secs(2)).unwrap();
    }
    let mut by_trade: HashMap<String, Value> = HashMap::new();
    for (_, _, payload) in &msgs {
        let fill: Value = serde_json::from_slice(payload).unwrap();
        let id = fill["trade_id"].as_str().unwrap().to_owned();
        if let Some(earlier) = by_trade.get(&id) {
            assert_eq!(earlier, &fill, "a re-emitted trade is identical");
        }
        by_trade.insert(id, fill);
    }
    assert_eq!(by_trade.len(), 3, "three distinct trades: {by_trade:?}");
    let filled_on_resting: u64 = by_trade
        .values()
        .filter(|f| f["maker_order_id"] == resting_id.as_str())
        .map(|f| f["qty"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(filled_on_resting, 4, "the resting order's fills sum to its quantity, not more");
}

#[test]
fn market_ioc_fok_and_post_only_orders_through_the_stack() {
    let s = stack();
    let order = |client: &str,
                 side: &str,
                 kind: &str,
                 tif: &str,
                 price: Option<&str>,
                 qty: &str,
                 post_only: bool| {
        let price = price.map_or(String::new(), |p| format!(r#","price":"{p}""#));
        let body = format!(
            r#"{{"client_order_id":"{client}","symbol":"ABC","side":"{side}","type":"{kind}","time_in_force":"{tif}","post_only":{post_only},"qty":"{qty}"{price}}}"#
        );
        post(&order_svc(&s), "/api/v1/orders", &body)["order_id"].as_str().unwrap().to_owned()
    };
    let ask = order("a-1", "sell", "limit", "gtc", Some("101.00"), "2", false);
    order_when(&s.svc("matcher"), &ask, |o| o["status"] == "resting");

    let market = order("m-1", "buy", "market", "ioc", None, "1", false);
    let m = order_when(&s.svc("matcher"), &market, |o| o["status"] == "filled");
    assert_eq!(m["fills"][0]["price"], "101.00");

    let ioc = order("i-1", "buy", "limit", "ioc", Some("101.00"), "5", false);
    let i = order_when(&s.svc("matcher"), &ioc, |o| o["status"] == "canceled");
    assert_eq!(i["filled_qty"], "1", "the IOC took what there was and the rest was canceled: {i}");

    let fok = order("f-1", "buy", "limit", "fok", Some("101.00"), "3", false);
    let f = order_when(&s.svc("matcher"), &fok, |o| o["status"] == "rejected");
    assert_eq!(f["reject_reason"], "fok_unfillable");

    let ask2 = order("a-2", "sell", "limit", "gtc", Some("102.00"), "1", false);
    order_when(&s.svc("matcher"), &ask2, |o| o["status"] == "resting");
    let taking = order("p-1", "buy", "limit", "gtc", Some("102.00"), "1", true);
    let p = order_when(&s.svc("matcher"), &taking, |o| o["status"] == "rejected");
    assert_eq!(p["reject_reason"], "post_only_would_take");
    let making = order("p-2", "buy", "limit", "gtc", Some("100.00"), "1", true);
    order_when(&s.svc("matcher"), &making, |o| o["status"] == "resting");
    let (_, book) = get(&s.svc("matcher"), "/api/v1/book/ABC");
    assert_eq!(book["bids"][0], serde_json::json!(["100.00", "1"]), "{book}");
    assert_eq!(book["asks"][0], serde_json::json!(["102.00", "1"]), "{book}");
}

/// The matcher's `/metrics` value of `name`, if it has one.
fn metric(matcher: &Service, name: &str) -> Option<i64> {
    let text = http().get(matcher.url("/metrics")).send().ok()?.text().ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        // Past the labels, if any: `name{service="matcher"} 1`.
        let value = if rest.starts_with('{') { rest.split_once("} ")?.1 } else { rest.strip_prefix(' ')? };
        value.parse().ok()
    })
}

/// The matcher's `/metrics` value of the `name{label…}` line.
fn labelled(matcher: &Service, name: &str, label: &str) -> i64 {
    let text = http().get(matcher.url("/metrics")).send().unwrap().text().unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or_else(|| panic!("no {name} {label}"))
}

/// At rest the matcher's consumer stops fetching (`common::wake`), and order entry's wake-up
/// brings it back: the order is read, and the resume is counted as a wake-up's, not a recheck's.
#[test]
fn an_idle_matcher_stops_fetching_and_order_entry_wakes_it() {
    let s = stack();
    let m = s.svc("matcher");
    for round in 0..2 {
        let asleep = || metric(&m, "matcher_consumer_paused") == Some(1);
        wait_until("the matcher's consumer to pause", Duration::from_secs(10), asleep).unwrap();
        let woken = labelled(&m, "matcher_consumer_resumes_total", "cause=\"wake\"");
        let id = post(&order_svc(&s), "/api/v1/orders", &v1(&format!("w-{round}"), "buy", "97.00", "1"));
        order_when(&m, id["order_id"].as_str().unwrap(), |o| o["status"] == "resting");
        let count = || labelled(&m, "matcher_consumer_resumes_total", "cause=\"wake\"") > woken;
        wait_until("a wake-up to resume it", Duration::from_secs(5), count).unwrap();
    }
    assert!(metric(&m, "matcher_consumer_pauses_total").unwrap_or(0) >= 2);
}

#[test]
fn the_matcher_is_ready_only_once_it_has_caught_up_with_the_log() {
    let mut s = stack();
    let resting = post(&order_svc(&s), "/api/v1/orders", &v1("r-1", "buy", "98.00", "2"));
    let resting_id = resting["order_id"].as_str().unwrap().to_owned();
    order_when(&s.svc("matcher"), &resting_id, |o| o["status"] == "resting");
    assert_eq!(get(&s.svc("matcher"), "/readyz").0, 200);
    assert_eq!(metric(&s.svc("matcher"), "matcher_caught_up"), Some(1));

    // Restarted while the log cannot be read: up (it answers), but not ready, and it says why.
    s.kill("matcher");
    s.kill("broker");
    s.start_again("matcher");
    for _ in 0..5 {
        let (status, v) = get(&s.svc("matcher"), "/readyz");
        assert_eq!((status, v["error"]["code"].as_str()), (503, Some("catching_up")), "{v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(&s.svc("matcher"), "matcher_caught_up"), Some(0));

    // The log is back: it catches up, then it is ready, and the book it serves is current.
    s.start_again("broker");
    wait_until("ready", Duration::from_secs(30), || get(&s.svc("matcher"), "/readyz").0 == 200).unwrap();
    assert_eq!(metric(&s.svc("matcher"), "matcher_catch_up_remaining"), Some(0));
    let crossing = post(&order_svc(&s), "/api/v1/orders", &v1("t-1", "sell", "98.00", "2"));
    let sold =
        order_when(&s.svc("matcher"), crossing["order_id"].as_str().unwrap(), |o| o["status"] == "filled");
    assert_eq!(sold["fills"][0]["price"], "98.00", "the rebuilt book held the resting order");
}

/// A Redis write that fails for any reason but the one a retried batch expects (re-adding a
/// stream entry that exists) is retried, not counted as written: here the `trades:ABC` stream is
/// replaced by a string, so the next trade's XADD meets WRONGTYPE. The batch is retried until the
/// key is free again, and the trade then reaches the stream. (Before, every error inside a batch
/// was ignored: the trade was never in the stream.)
#[test]
fn a_failed_redis_write_is_retried_not_dropped() {
    let s = stack();
    let matcher = s.svc("matcher");
    let trade = |n: u32| {
        let sell = post(&order_svc(&s), "/api/v1/orders", &v1(&format!("rs-{n}"), "sell", "100.00", "1"));
        order_when(&matcher, sell["order_id"].as_str().unwrap(), |o| o["status"] == "resting");
        let buy = post(&order_svc(&s), "/api/v1/orders", &v1(&format!("rb-{n}"), "buy", "100.00", "1"));
        buy["order_id"].as_str().unwrap().to_owned()
    };
    let first = trade(1);
    order_when(&matcher, &first, |o| o["status"] == "filled" && o["hops"]["persisted_ns"].as_u64().is_some());
    assert_eq!(s.redis(&["XLEN", "trades:ABC"]), ":1");

    s.redis(&["DEL", "trades:ABC"]);
    assert_eq!(s.redis(&["SET", "trades:ABC", "not a stream"]), "+OK");
    let retries = metric(&matcher, "matcher_io_retries_total").unwrap_or(0);
    let second = trade(2);
    let retried = wait_until("the failed batch retried", Duration::from_secs(30), || {
        metric(&matcher, "matcher_io_retries_total").unwrap_or(0) > retries + 1
    });
    assert!(retried.is_ok(), "no retry: {}", s.tail("matcher"));
    assert_eq!(s.redis(&["TYPE", "trades:ABC"]), "+string", "the stream key is still the trap");

    s.redis(&["DEL", "trades:ABC"]);
    order_when(&matcher, &second, |o| {
        o["status"] == "filled" && o["hops"]["persisted_ns"].as_u64().is_some()
    });
    let written = wait_until("the trade in the stream", Duration::from_secs(30), || {
        s.redis(&["XLEN", "trades:ABC"]) == ":1"
    });
    assert!(written.is_ok(), "trades:ABC: {}", s.redis(&["TYPE", "trades:ABC"]));
}
