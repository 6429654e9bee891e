//! Book snapshots in the running matcher (DESIGN.md §3): taken every few commands, loaded on a
//! restart so the log is replayed only from their offsets, a corrupt one skipped and never
//! trusted, and every restart — from a snapshot, from an older one, from the log alone — gives
//! back the same book, which then matches as the original would have.

use std::path::PathBuf;
use std::time::Duration;

use itest::{http, wait_until, Service, Stack};
use serde_json::Value;

/// Broker, Redis, the matcher (a snapshot every 4 commands) and one order-svc.
fn stack() -> Stack {
    Stack::start_with_matcher_args(1, &["--snapshot-every", "4"])
}

fn post(svc: &Service, path: &str, body: &str) -> String {
    let r =
        http().post(svc.url(path)).header("content-type", "application/json").body(body.to_owned()).send();
    let r = r.unwrap();
    assert_eq!(r.status().as_u16(), 202, "{path} {body}");
    r.json::<Value>().unwrap()["order_id"].as_str().unwrap().to_owned()
}

fn get(svc: &Service, path: &str) -> Value {
    http().get(svc.url(path)).send().unwrap().json().unwrap_or(Value::Null)
}

fn order(client: &str, side: &str, price: &str, qty: &str) -> String {
    format!(
        r#"{{"client_order_id":"{client}","symbol":"ABC","side":"{side}","type":"limit","price":"{price}","qty":"{qty}"}}"#
    )
}

/// Waits until order `id` satisfies `done`.
fn order_when(matcher: &Service, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(&format!("order {id}"), Duration::from_secs(30), || {
        last = get(matcher, &format!("/api/v1/orders/{id}"));
        done(&last)
    });
    assert!(ok.is_ok(), "order {id}: last seen {last}");
    last
}

/// The matcher's unlabelled metric `name`.
fn metric(matcher: &Service, name: &str) -> Option<f64> {
    let text = http().get(matcher.url("/metrics")).send().ok()?.text().ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = if rest.starts_with('{') { rest.split_once("} ")?.1 } else { rest.strip_prefix(' ')? };
        value.parse().ok()
    })
}

/// The snapshot files, oldest first.
fn snapshots(s: &Stack) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(s.dir().join("snapshots"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "tlsnap"));
    files.sort();
    files
}

/// SIGKILLs the matcher, starts it again and waits until it has caught up; what its log said
/// in this run.
fn crash_and_restart(s: &mut Stack) -> String {
    let before = std::fs::read_to_string(s.log_path("matcher")).unwrap_or_default().len();
    s.kill("matcher");
    s.start_again("matcher");
    let m = s.svc("matcher");
    let ready = wait_until("the matcher caught up", Duration::from_secs(60), || {
        metric(&m, "matcher_caught_up") == Some(1.0)
    });
    assert!(ready.is_ok(), "{}", s.tail("matcher"));
    let log = std::fs::read_to_string(s.log_path("matcher")).unwrap_or_default();
    log.get(before..).unwrap_or_default().to_owned()
}

/// How the matcher comes back in a case.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Restart {
    /// It is never stopped: the reference.
    Never,
    /// SIGKILL, then from the newest snapshot.
    Newest,
    /// SIGKILL with the newest snapshot corrupt: from the older one.
    CorruptNewest,
    /// SIGKILL with every snapshot gone: the whole log.
    NoSnapshot,
}

/// Places the same eleven commands (bids at four prices, two of them at 99.50 in time order,
/// asks, a trade, a cancel), restarts the matcher as `how` says, then sweeps both sides of the
/// book: what the two sweeps traded (price, quantity, trade id, in order) and the book's
/// sequence number afterwards. Equal across cases ⇔ the books behaved the same.
fn run(how: Restart) -> Value {
    let mut s = stack();
    let (entry, m) = (s.svc("order-svc-1"), s.svc("matcher"));
    let mut ids = Vec::new();
    for (i, (price, qty)) in [("99.50", "2"), ("99.50", "3"), ("99.00", "4"), ("98.50", "5"), ("98.00", "6")]
        .into_iter()
        .enumerate()
    {
        ids.push(post(&entry, "/api/v1/orders", &order(&format!("b-{i}"), "buy", price, qty)));
    }
    ids.push(post(&entry, "/api/v1/orders", &order("a-1", "sell", "101.00", "7")));
    let taker = post(&entry, "/api/v1/orders", &order("t-1", "sell", "99.50", "1"));
    order_when(&m, &taker, |o| o["status"] == "filled");
    let r = http().delete(entry.url(&format!("/api/v1/orders/{}", ids[3]))).send().unwrap();
    assert_eq!(r.status().as_u16(), 202);
    order_when(&m, &ids[3], |o| o["status"] == "canceled");
    for i in 0..3 {
        let id = post(&entry, "/api/v1/orders", &order(&format!("late-{i}"), "sell", "102.00", "1"));
        order_when(&m, &id, |o| o["status"] == "resting");
    }
    let written = wait_until("two snapshots", Duration::from_secs(20), || {
        metric(&m, "matcher_snapshots_written_total").is_some_and(|n| n >= 2.0)
    });
    assert!(written.is_ok(), "{}", s.tail("matcher"));
    assert!(metric(&m, "matcher_snapshot_pause_seconds_sum").unwrap() > 0.0, "the pause is measured");
    let resting = |m: &Service| metric(m, "matcher_resting_orders");
    let before = resting(&m);
    assert_eq!(before, Some(8.0));

    match how {
        Restart::Never => {}
        Restart::Newest => {
            let log = crash_and_restart(&mut s);
            assert!(log.contains("restored the books from a snapshot"), "{log}");
            assert_eq!(metric(&m, "matcher_snapshot_restored"), Some(1.0));
        }
        Restart::CorruptNewest => {
            let newest = snapshots(&s).pop().unwrap();
            let mut bytes = std::fs::read(&newest).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x5a;
            std::fs::write(&newest, bytes).unwrap();
            let log = crash_and_restart(&mut s);
            assert!(log.contains("snapshot skipped: not trusted") && log.contains("checksum"), "{log}");
            assert!(log.contains("restored the books from a snapshot"), "{log}");
        }
        Restart::NoSnapshot => {
            for f in snapshots(&s) {
                std::fs::remove_file(f).unwrap();
            }
            let log = crash_and_restart(&mut s);
            assert!(log.contains("no usable snapshot"), "{log}");
            assert_eq!(metric(&m, "matcher_snapshot_restored"), Some(0.0));
        }
    }
    assert_eq!(resting(&m), before, "{how:?}: the restarted book holds the same orders");

    let mut swept = Vec::new();
    for (client, side, price, qty) in [("sweep-b", "sell", "98.00", "14"), ("sweep-a", "buy", "102.00", "10")]
    {
        let id = post(&entry, "/api/v1/orders", &order(client, side, price, qty));
        let mut o = order_when(&m, &id, |o| o["status"] == "filled");
        // Each run's clock differs; everything else must not.
        for f in o["fills"].as_array_mut().unwrap() {
            f.as_object_mut().unwrap().remove("ts");
        }
        swept.push(o["fills"].clone());
    }
    let book = get(&m, "/api/v1/book/ABC");
    serde_json::json!({"fills": swept, "sequence": book["sequence"], "bids": book["bids"], "asks": book["asks"]})
}

#[test]
fn a_book_rebuilt_from_a_snapshot_and_the_log_behaves_as_the_original() {
    let reference = run(Restart::Never);
    assert_eq!(reference["fills"][0].as_array().map(Vec::len), Some(4), "{reference}");
    for how in [Restart::Newest, Restart::CorruptNewest, Restart::NoSnapshot] {
        assert_eq!(run(how), reference, "{how:?}");
    }
}
