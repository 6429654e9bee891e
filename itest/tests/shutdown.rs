//! Graceful shutdown: SIGTERM (what `./lab down`, docker and systemd send) ends every service with
//! exit status 0, and the matcher first finishes and commits what it had read, so a restart after
//! a clean stop emits nothing a second time (after a crash it may: DESIGN.md §3).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use itest::{http, wait_until, Service, Signal, Stack};
use serde_json::Value;

/// How long a service may take to stop (the matcher's drain is bounded at 10 s).
const GRACE: Duration = Duration::from_secs(20);

fn place(svc: &Service, client: &str, side: &str) -> String {
    let body = format!(
        r#"{{"client_order_id":"{client}","symbol":"ABC","side":"{side}","type":"limit","price":"100.00","qty":"1"}}"#
    );
    let r = svc
        .client()
        .post(svc.url("/api/v1/orders"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    r.json::<Value>().unwrap()["order_id"].as_str().unwrap().to_owned()
}

fn status(matcher: &Service, id: &str) -> Value {
    let r = http().get(matcher.url(&format!("/api/v1/orders/{id}"))).send().unwrap();
    r.json::<Value>().unwrap_or(Value::Null)["status"].clone()
}

/// A steady flow straight to `order_svc` (four senders, each a sell then a buy of one lot at one
/// price, so every pair trades); `fault` runs `after` it started, the flow goes on 200 ms more (what
/// a stopped matcher misses waits in the log). The ids of every order placed, and `fault`'s result.
fn steady_flow<R>(order_svc: &Service, after: Duration, fault: impl FnOnce() -> R) -> (Vec<String>, R) {
    let enough = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let enough = &enough;
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    let mut i = 0;
                    while !enough.load(Ordering::Relaxed) {
                        ids.push(place(order_svc, &format!("s-{t}-{i}"), "sell"));
                        ids.push(place(order_svc, &format!("b-{t}-{i}"), "buy"));
                        i += 1;
                    }
                    ids
                })
            })
            .collect();
        std::thread::sleep(after);
        let out = fault();
        std::thread::sleep(Duration::from_millis(200));
        enough.store(true, Ordering::Relaxed);
        (senders.into_iter().flat_map(|h| h.join().unwrap()).collect(), out)
    })
}

#[test]
fn sigterm_stops_every_service_cleanly_and_a_drained_matcher_re_emits_nothing() {
    let mut s = Stack::start(1, 1, false);
    // Through the gateway, so it and order-svc are stopped with requests behind them.
    let first = place(&s.as_user("gateway-1", "alice"), "warm-s", "sell");
    let second = place(&s.as_user("gateway-1", "bob"), "warm-b", "buy");
    wait_until("first trade", Duration::from_secs(30), || status(&s.svc("matcher"), &second) == "filled")
        .unwrap();
    assert_eq!(status(&s.svc("matcher"), &first), "filled");

    // SIGTERM in the middle of a steady flow (four senders straight to order-svc), so batches are
    // being matched and written when the drain starts. The flow goes on while the matcher is down:
    // those orders wait in the log.
    let order_svc = s.svc("order-svc-1");
    let (ids, exit) = steady_flow(&order_svc, Duration::from_secs(1), || s.terminate("matcher", GRACE));
    let exit = exit.expect("the matcher stops on SIGTERM");
    assert!(exit.success(), "matcher exit: {exit:?}\n{}", s.tail("matcher"));
    let log = std::fs::read_to_string(s.log_path("matcher")).unwrap();
    assert!(log.contains("drained: every persisted command is committed"), "{}", s.tail("matcher"));

    s.start_again("matcher");
    for id in &ids {
        wait_until(id, Duration::from_secs(30), || status(&s.svc("matcher"), id) == "filled").unwrap();
    }

    // One message per trade on `trades`: the restart re-emitted none of what was committed.
    let want = ids.len() / 2 + 1;
    let msgs = s.read_all("trades", 2, want + 10, Duration::from_secs(5)).unwrap();
    let trade_ids: HashSet<String> = msgs
        .iter()
        .map(|(_, _, p)| serde_json::from_slice::<Value>(p).unwrap()["trade_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(trade_ids.len(), want, "distinct trades");
    assert_eq!(msgs.len(), want, "{} messages for {want} trades: something was emitted twice", msgs.len());

    for name in ["gateway-1", "order-svc-1", "matcher"] {
        let exit = s.terminate(name, GRACE).unwrap_or_else(|| panic!("{name} ignored SIGTERM"));
        assert!(exit.success(), "{name} exit: {exit:?}\n{}", s.tail(name));
    }
}

#[test]
fn a_killed_matcher_adds_nothing_twice_to_the_topics() {
    // Offsets committed once a second: a SIGKILL in the middle of a steady flow leaves up to a
    // second of outputs written but not committed, which the next run emits again (same ids).
    // The topics must still hold each event once.
    let mut s = Stack::start_with_matcher_args(1, &["--commit-interval-ms", "1000"]);
    let order_svc = s.svc("order-svc-1");
    let (ids, ()) = steady_flow(&order_svc, Duration::from_millis(1500), || s.kill("matcher"));
    s.start_again("matcher");
    for id in &ids {
        wait_until(id, Duration::from_secs(30), || status(&s.svc("matcher"), id) == "filled").unwrap();
    }
    let log = std::fs::read_to_string(s.log_path("matcher")).unwrap();
    assert!(log.contains("emitting only past their last events"), "{}", s.tail("matcher"));

    let trades = s.counted("trades", "trade_id", Duration::from_secs(5));
    assert_eq!(trades.len(), ids.len() / 2, "one trade per pair of orders");
    let events = s.counted("order-events", "event_id", Duration::from_secs(5));
    assert!(events.len() >= ids.len() * 2, "accepted and a fill or level per order: {}", events.len());
    for (topic, seen) in [("trades", &trades), ("order-events", &events)] {
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{topic} holds these more than once: {twice:?}");
    }
}

/// A matcher's Kafka write held up by a broker that stops answering for longer than a delivery
/// timeout would allow (10 s, as it was) lands once when the broker answers again: the I/O
/// thread waits for it (and says so after 10 s) instead of sending the batch a second time.
/// Redis is paused first so that the batch reaches its Kafka write only once the broker is paused.
#[test]
fn a_write_held_up_by_a_paused_broker_lands_once() {
    let s = Stack::start_with_matcher_args(1, &[]);
    let order_svc = s.svc("order-svc-1");
    s.signal("redis", Signal::SIGSTOP);
    let ids = [place(&order_svc, "held-1", "sell"), place(&order_svc, "held-2", "buy")];
    // The matcher reads both and matches them; its I/O thread waits on Redis.
    std::thread::sleep(Duration::from_secs(1));
    s.signal("broker", Signal::SIGSTOP);
    s.signal("redis", Signal::SIGCONT);
    let log = s.log_path("matcher");
    let waited = wait_until("the I/O thread to say it waits for the broker", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("no Kafka acknowledgement yet"))
    });
    // Past the old 10 s delivery timeout before the broker answers again.
    std::thread::sleep(Duration::from_secs(2));
    s.signal("broker", Signal::SIGCONT);
    assert!(waited.is_ok(), "{}", s.tail("matcher"));
    for id in &ids {
        wait_until(id, Duration::from_secs(30), || status(&s.svc("matcher"), id) == "filled").unwrap();
    }
    let trades = s.counted("trades", "trade_id", Duration::from_secs(5));
    assert_eq!(trades.values().copied().collect::<Vec<_>>(), [1], "one trade, once: {trades:?}");
    let events = s.counted("order-events", "event_id", Duration::from_secs(5));
    assert!(events.len() >= 4, "accepted twice, a fill, a level: {events:?}");
    let twice: Vec<_> = events.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "order-events holds these more than once: {twice:?}");
}
