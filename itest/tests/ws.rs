//! Market data over WebSocket (`GET /ws`, gateway/WEBSOCKET.md) on real stacks: a book built
//! from the socket equals the matcher's at the same sequence after a random flow (subscribed
//! before, during and with a deliberately dropped update); gaps the server makes (a skipped
//! update, an overflowed queue) are healed by a resync; the `orders` channel carries only the
//! caller's own events and refuses a caller who is not signed in; bad channels and symbols are
//! errors; heartbeats come and a silent client is closed; the broker going away is told and the
//! feed resumes when it is back.
//!
//! The client here is written from the documented rules, independently of the gateway's code.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use itest::{http, wait_until, Service, Stack};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// A WebSocket client on one connection.
struct Ws(WebSocket<TcpStream>);

impl Ws {
    /// Connects to `svc`'s `/ws` with optional extra headers.
    fn connect(svc: &Service, headers: &[(&'static str, String)]) -> Ws {
        let mut req = format!("ws://127.0.0.1:{}/ws", svc.port).into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        let stream = TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let (ws, resp) = tungstenite::client::client(req, stream).expect("the upgrade");
        assert_eq!(resp.status().as_u16(), 101);
        Ws(ws)
    }

    fn send(&mut self, v: Value) {
        self.0.send(Message::text(v.to_string())).unwrap();
    }

    /// The next JSON frame, `None` after `timeout` without one; `Some(Null)` when closed.
    fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.0.read() {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Message::Close(c)) => return Some(json!({"type": "closed", "reason": format!("{c:?}")})),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return Some(json!({"type": "closed"})),
            }
        }
        None
    }

    /// Reads until a frame matches `want` (panics after `timeout`, listing what came).
    fn until(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(v) = self.next(Duration::from_millis(200)) {
                if want(&v) {
                    return v;
                }
                seen.push(v);
            }
        }
        panic!("no matching frame in {timeout:?}; got {seen:#?}")
    }
}

/// A book kept by the documented rules.
#[derive(Debug, Default)]
struct Book {
    /// The sequence it is at (`None` before a snapshot).
    seq: Option<u64>,
    /// Price in ticks → (price text, qty text).
    bids: BTreeMap<i64, (String, String)>,
    asks: BTreeMap<i64, (String, String)>,
    snapshots: usize,
    updates: usize,
    gaps: usize,
    overflows: usize,
    /// Updates still to drop on purpose (a client that loses one).
    drop_next: usize,
}

fn ticks(price: &str) -> i64 {
    price.replace('.', "").parse().unwrap()
}

impl Book {
    /// Applies a frame; true if the client must resubscribe (a gap).
    fn on(&mut self, v: &Value) -> bool {
        match v["type"].as_str() {
            Some("snapshot") => {
                self.bids.clear();
                self.asks.clear();
                for (side, name) in [(&mut self.bids, "bids"), (&mut self.asks, "asks")] {
                    for l in v[name].as_array().unwrap() {
                        let (p, q) = (l[0].as_str().unwrap(), l[1].as_str().unwrap());
                        side.insert(ticks(p), (p.to_owned(), q.to_owned()));
                    }
                }
                self.seq = v["sequence"].as_u64();
                self.snapshots += 1;
                false
            }
            Some("update") => {
                let Some(seq) = self.seq else { return false };
                let (sequence, prev) =
                    (v["sequence"].as_u64().unwrap(), v["prev_sequence"].as_u64().unwrap());
                if sequence <= seq {
                    return false;
                }
                if self.drop_next > 0 {
                    self.drop_next -= 1;
                    return false;
                }
                if prev != seq {
                    self.gaps += 1;
                    self.seq = None;
                    return true;
                }
                for c in v["changes"].as_array().unwrap() {
                    let (side, p, q) =
                        (c[0].as_str().unwrap(), c[1].as_str().unwrap(), c[2].as_str().unwrap());
                    let levels = if side == "buy" { &mut self.bids } else { &mut self.asks };
                    if q == "0" {
                        levels.remove(&ticks(p));
                    } else {
                        levels.insert(ticks(p), (p.to_owned(), q.to_owned()));
                    }
                }
                self.seq = Some(sequence);
                self.updates += 1;
                false
            }
            Some("overflow") => {
                self.overflows += 1;
                self.seq = None;
                false
            }
            _ => false,
        }
    }

    /// The book as `GET /api/v1/book` shows it.
    fn as_rest(&self) -> Value {
        let side = |m: &BTreeMap<i64, (String, String)>, rev: bool| -> Vec<Value> {
            let rows: Vec<Value> = m.values().map(|(p, q)| json!([p, q])).collect();
            if rev {
                rows.into_iter().rev().collect()
            } else {
                rows
            }
        };
        json!({"sequence": self.seq, "bids": side(&self.bids, true), "asks": side(&self.asks, false)})
    }
}

/// A client on its own thread keeping `book:ABC` (and resubscribing on a gap); ops can be sent
/// through it.
struct Replica {
    book: Arc<Mutex<Book>>,
    ops: mpsc::Sender<Value>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Value>>>,
}

impl Replica {
    fn start(svc: &Service, drop_updates: usize) -> Replica {
        let book = Arc::new(Mutex::new(Book { drop_next: drop_updates, ..Book::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (ops, rx) = mpsc::channel::<Value>();
        let mut ws = Ws::connect(svc, &[]);
        ws.until(Duration::from_secs(5), |v| v["type"] == "welcome");
        ws.send(json!({"op": "subscribe", "channel": "book:ABC"}));
        let (b, s) = (book.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut others = Vec::new();
            while !s.load(Ordering::Relaxed) {
                for op in rx.try_iter() {
                    ws.send(op);
                }
                let Some(v) = ws.next(Duration::from_millis(100)) else { continue };
                let resubscribe = b.lock().unwrap().on(&v);
                if resubscribe {
                    ws.send(json!({"op": "unsubscribe", "channel": "book:ABC"}));
                    ws.send(json!({"op": "subscribe", "channel": "book:ABC"}));
                }
                if !matches!(v["type"].as_str(), Some("update" | "heartbeat")) {
                    others.push(v);
                }
            }
            others
        });
        Replica { book, ops, stop, thread: Some(thread) }
    }

    fn seq(&self) -> Option<u64> {
        self.book.lock().unwrap().seq
    }

    /// Stops the thread: the frames other than updates and heartbeats it saw.
    fn finish(mut self) -> (Book, Vec<Value>) {
        self.stop.store(true, Ordering::Relaxed);
        let others = self.thread.take().unwrap().join().unwrap();
        let book = std::mem::take(&mut *self.book.lock().unwrap());
        (book, others)
    }
}

/// A small deterministic generator (no dependency for it).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` random actions by `users` through `svc`: limit orders around 100.00, crossing and
/// resting, some IOC, and cancels of earlier orders. Returns the order ids.
fn random_flow(users: &[Service], rng: &mut Rng, n: usize, tag: &str) -> Vec<(usize, String)> {
    let mut placed: Vec<(usize, String)> = Vec::new();
    for i in 0..n {
        let u = rng.below(users.len() as u64) as usize;
        let client = users[u].client();
        if !placed.is_empty() && rng.below(5) == 0 {
            let (owner, id) = placed.swap_remove(rng.below(placed.len() as u64) as usize);
            let r = users[owner]
                .client()
                .delete(users[owner].url(&format!("/api/v1/orders/{id}")))
                .send()
                .unwrap();
            assert!(matches!(r.status().as_u16(), 202 | 404), "cancel {id}: {}", r.status());
            continue;
        }
        let side = if rng.below(2) == 0 { "buy" } else { "sell" };
        let cents = 9_900 + 5 * rng.below(41) as i64;
        let price = format!("{}.{:02}", cents / 100, cents % 100);
        let tif = if rng.below(8) == 0 { "ioc" } else { "gtc" };
        let body = json!({
            "client_order_id": format!("{tag}-{i}"), "symbol": "ABC", "side": side, "type": "limit",
            "time_in_force": tif, "price": price, "qty": (1 + rng.below(9)).to_string(),
        });
        let r = client.post(users[u].url("/api/v1/orders")).json(&body).send().unwrap();
        assert_eq!(r.status().as_u16(), 202, "{body}");
        let v: Value = r.json().unwrap();
        placed.push((u, v["order_id"].as_str().unwrap().to_owned()));
    }
    placed
}

/// `GET /api/v1/book/ABC?depth=50` once its sequence has stopped moving and every replica is
/// there too.
fn settled_book(svc: &Service, replicas: &[&Replica]) -> Value {
    let mut book = Value::Null;
    let mut last = None;
    let settled = wait_until("the book and the replicas at one sequence", Duration::from_secs(30), || {
        book = http().get(svc.url("/api/v1/book/ABC?depth=50")).send().unwrap().json().unwrap();
        let seq = book["sequence"].as_u64();
        let stable = seq == last;
        last = seq;
        stable && replicas.iter().all(|r| r.seq() == seq)
    });
    let seqs: Vec<Option<u64>> = replicas.iter().map(|r| r.seq()).collect();
    assert!(settled.is_ok(), "book at {:?}, replicas at {seqs:?}", book["sequence"]);
    book
}

fn same_book(replica: &Book, rest: &Value) {
    let mine = replica.as_rest();
    assert_eq!(mine["sequence"], rest["sequence"]);
    assert_eq!(mine["bids"], rest["bids"], "bids");
    assert_eq!(mine["asks"], rest["asks"], "asks");
}

#[test]
fn a_book_built_from_the_socket_equals_the_matchers_at_the_same_sequence() {
    let s = stack(2, 2, true);
    let nginx = s.svc("nginx");
    let users: Vec<Service> = ["alice", "bob", "carol"].iter().map(|u| s.as_user("nginx", u)).collect();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    // Subscribed before the flow; one that loses its 5th update on purpose.
    let early = Replica::start(&nginx, 0);
    let lossy = Replica::start(&nginx, 0);
    wait_until("snapshots", Duration::from_secs(10), || early.seq().is_some() && lossy.seq().is_some())
        .unwrap();
    lossy.book.lock().unwrap().drop_next = 0;
    random_flow(&users, &mut rng, 60, "a");
    lossy.book.lock().unwrap().drop_next = 1;
    // One subscribed in the middle of a flow: its snapshot races live updates.
    let late = std::thread::scope(|scope| {
        let flow = scope.spawn(|| random_flow(&users, &mut Rng(0x00C0_FFEE_0000_0002), 120, "b"));
        std::thread::sleep(Duration::from_millis(300));
        let late = Replica::start(&nginx, 0);
        flow.join().unwrap();
        late
    });
    random_flow(&users, &mut rng, 60, "c");
    let rest = settled_book(&nginx, &[&early, &lossy, &late]);
    assert!(
        rest["bids"].as_array().unwrap().len() + rest["asks"].as_array().unwrap().len() >= 4,
        "a flow that leaves a book: {rest}"
    );
    let (early, _) = early.finish();
    let (lossy, _) = lossy.finish();
    let (late, _) = late.finish();
    for (name, b) in [("early", &early), ("lossy", &lossy), ("late", &late)] {
        eprintln!("{name}: {} snapshots, {} updates, {} gaps", b.snapshots, b.updates, b.gaps);
        same_book(b, &rest);
    }
    assert_eq!((early.snapshots, early.gaps), (1, 0), "no gap without a loss");
    assert!(early.updates >= 100, "updates flowed: {}", early.updates);
    assert_eq!(lossy.gaps, 1, "the dropped update is seen as a gap");
    assert_eq!(lossy.snapshots, 2, "and healed by a fresh snapshot");
}

/// A stack of `order_svcs`, `gateways`, nginx or not.
fn stack(order_svcs: usize, gateways: usize, nginx: bool) -> Stack {
    Stack::start(order_svcs, gateways, nginx)
}

/// A stack whose gateways have the test hooks, a tiny queue and quick heartbeats.
fn hooked_stack() -> Stack {
    let hooks =
        ["--ws-test-hooks", "--ws-queue", "16", "--ws-heartbeat-secs", "1", "--ws-idle-timeout-secs", "3"];
    Stack::start_with_gateway_args(1, 1, false, &hooks)
}

#[test]
fn gaps_the_server_makes_are_healed_by_a_resync() {
    let s = hooked_stack();
    let gw = s.svc("gateway-1");
    let users: Vec<Service> = ["dave", "erin"].iter().map(|u| s.as_user("gateway-1", u)).collect();
    let mut rng = Rng(0xFACE_B00C_0000_0003);
    let r = Replica::start(&gw, 0);
    wait_until("a snapshot", Duration::from_secs(10), || r.seq().is_some()).unwrap();
    // The server leaves one update out for this session: the next one's prev_sequence shows it.
    // The flow comes in chunks of 3 orders, each waited on: the gateway's feed reads the topic
    // in batches, and a slow machine could hand it a batch larger than the 16-frame queue,
    // whose overflow would resync the book before the gap is seen.
    r.ops.send(json!({"op": "debug_skip", "channel": "book:ABC"})).unwrap();
    let mut seen = false;
    for chunk in 0..10 {
        random_flow(&users, &mut rng, 3, &format!("a{chunk}"));
        seen = wait_until("the skipped update is seen", Duration::from_secs(3), || {
            r.book.lock().unwrap().gaps == 1
        })
        .is_ok();
        if seen || r.book.lock().unwrap().overflows > 0 {
            break;
        }
    }
    if !seen {
        let (b, others) = r.finish();
        panic!("{b:?} {others:#?} {}", s.tail("gateway-1"));
    }
    // The session stops reading its queue (16 frames) while a flow runs: it overflows, is told,
    // and gets a fresh snapshot.
    // The pause outlasts the flow (40 orders take ~1 s), so the one overflow is all there is.
    r.ops.send(json!({"op": "debug_pause", "ms": 4000})).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let flow = Instant::now();
    random_flow(&users, &mut rng, 40, "b");
    let flow = flow.elapsed();
    let rest = settled_book(&gw, &[&r]);
    let (book, others) = r.finish();
    eprintln!(
        "{} snapshots, {} updates, {} gaps, {} overflows",
        book.snapshots, book.updates, book.gaps, book.overflows
    );
    same_book(&book, &rest);
    assert_eq!(book.overflows, 1, "told of the overflow (the flow took {flow:?}): {others:#?}");
    let overflow = others.iter().find(|v| v["type"] == "overflow").unwrap();
    assert_eq!(overflow["channels"], json!(["book:ABC"]));
    assert_eq!(overflow["closing"], false);
    assert_eq!(book.snapshots, 3, "the first, after the gap, after the overflow");
    let metrics = http().get(gw.url("/metrics")).send().unwrap().text().unwrap();
    let value = |name: &str| -> f64 {
        let line =
            metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("ws_overflows_total"), 1.0);
    assert!(value("ws_messages_sent_total") > 10.0);
    assert_eq!(value("ws_sessions"), 0.0, "the session ended");
    assert_eq!(value("ws_feed_up"), 1.0);
    assert!(metrics.contains("ws_feed_lag_seconds_count"));
}

#[test]
fn bad_requests_get_errors_heartbeats_come_and_a_silent_client_is_closed() {
    let s = hooked_stack();
    let gw = s.svc("gateway-1");
    let mut ws = Ws::connect(&gw, &[]);
    let welcome = ws.until(Duration::from_secs(5), |v| v["type"] == "welcome");
    assert_eq!((welcome["account"].clone(), welcome["heartbeat_secs"].clone()), (Value::Null, json!(1)));
    let mut ask = |op: Value| {
        ws.send(op);
        ws.until(Duration::from_secs(5), |v| v["type"] != "heartbeat")
    };
    let cases = [
        (json!({"op": "subscribe", "channel": "candles:ABC", "id": 1}), "bad_channel"),
        (json!({"op": "subscribe", "channel": "book:NOPE"}), "unknown_symbol"),
        (json!({"op": "subscribe", "channel": "orders"}), "auth_required"),
        (json!({"op": "unsubscribe", "channel": "trades:ABC"}), "not_subscribed"),
        (json!({"op": "explode"}), "bad_request"),
    ];
    for (op, code) in cases {
        let v = ask(op.clone());
        assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some("error"), Some(code)), "{op}: {v}");
    }
    let v = ask(json!({"op": "subscribe", "channel": "book:NOPE"}));
    assert!(v["message"].as_str().unwrap().contains("ABC, DEF, XYZ"), "names the symbols: {v}");
    assert_eq!(
        ask(json!({"op": "subscribe", "channel": "trades:ABC", "id": "t"})),
        json!({"type": "subscribed", "channel": "trades:ABC", "id": "t"})
    );
    assert_eq!(ask(json!({"op": "subscribe", "channel": "trades:ABC"}))["code"], "already_subscribed");
    assert_eq!(ask(json!({"op": "ping", "id": 9})), json!({"type": "pong", "id": 9}));
    ws.until(Duration::from_secs(3), |v| v["type"] == "heartbeat");
    // Silent (not reading, so not answering pings) past the 3 s idle timeout: closed.
    std::thread::sleep(Duration::from_secs(6));
    let closed = ws.until(Duration::from_secs(5), |v| v["type"] == "closed");
    // The close frame's reason, unless the client's queued pongs hit the closed socket first.
    if let Some(reason) = closed["reason"].as_str() {
        assert!(reason.contains("idle"), "{closed}");
    }
    let sessions = || {
        let text = http().get(gw.url("/metrics")).send().unwrap().text().unwrap();
        text.lines().find(|l| l.starts_with("ws_sessions")).map(str::to_owned).unwrap_or_default()
    };
    wait_until("the session gone", Duration::from_secs(5), || sessions().ends_with(" 0")).unwrap();
}

#[test]
fn the_orders_channel_is_private_and_needs_a_sign_in() {
    let s = stack(1, 1, false);
    let (alice, bob) = (s.as_user("gateway-1", "alice"), s.as_user("gateway-1", "bob"));
    let gw = s.svc("gateway-1");
    let mut a = Ws::connect(&gw, &[("authorization", format!("Bearer {}", alice.token.clone().unwrap()))]);
    // The browser's way: the session cookie, sent with the upgrade request.
    let mut b = Ws::connect(&gw, &[("cookie", format!("session={}", bob.token.clone().unwrap()))]);
    let mut anon = Ws::connect(&gw, &[]);
    let mut forged = Ws::connect(&gw, &[("authorization", "Bearer not-a-token".to_owned())]);
    assert_eq!(a.until(Duration::from_secs(5), |v| v["type"] == "welcome")["account"], "alice");
    assert_eq!(b.until(Duration::from_secs(5), |v| v["type"] == "welcome")["account"], "bob");
    for ws in [&mut anon, &mut forged] {
        ws.send(json!({"op": "subscribe", "channel": "orders"}));
        let v = ws.until(Duration::from_secs(5), |v| v["type"] == "error");
        assert_eq!(v["code"], "auth_required", "{v}");
    }
    for ws in [&mut a, &mut b] {
        ws.send(json!({"op": "subscribe", "channel": "orders"}));
        ws.until(Duration::from_secs(5), |v| v["type"] == "subscribed");
    }
    let place = |who: &Service, body: Value| -> String {
        let r = who.client().post(who.url("/api/v1/orders")).json(&body).send().unwrap();
        assert_eq!(r.status().as_u16(), 202);
        r.json::<Value>().unwrap()["order_id"].as_str().unwrap().to_owned()
    };
    let sell = place(
        &alice,
        json!({"client_order_id": "a-1", "symbol": "ABC", "side": "sell", "type": "limit", "price": "100.00", "qty": "5"}),
    );
    let buy = place(
        &bob,
        json!({"client_order_id": "b-1", "symbol": "ABC", "side": "buy", "type": "limit", "price": "100.00", "qty": "3"}),
    );
    wait_until("alice's order partly filled", Duration::from_secs(15), || {
        let r = alice.client().get(alice.url(&format!("/api/v1/orders/{sell}"))).send().unwrap();
        r.status().as_u16() == 200 && r.json::<Value>().unwrap()["status"] == "partially_filled"
    })
    .unwrap();
    let r = alice.client().delete(alice.url(&format!("/api/v1/orders/{sell}"))).send().unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let events = |ws: &mut Ws, last: &str| -> Vec<Value> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(v) = ws.next(Duration::from_millis(200)) {
                if v["type"] == "order" {
                    got.push(v.clone());
                    if v["event"] == last {
                        break;
                    }
                }
            }
        }
        got
    };
    let mine = events(&mut a, "canceled");
    let kinds: Vec<&str> = mine.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["accepted", "fill", "canceled"], "{mine:#?}");
    assert_eq!(mine[1]["liquidity"], "maker");
    assert_eq!((mine[1]["order_id"].as_str(), mine[1]["leaves"].as_str()), (Some(sell.as_str()), Some("2")));
    assert_eq!(mine[2]["order_id"], sell.as_str(), "a cancel names no account: routed by the order's owner");
    let theirs = events(&mut b, "fill");
    let kinds: Vec<&str> = theirs.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["accepted", "fill"], "{theirs:#?}");
    assert_eq!(
        (theirs[1]["order_id"].as_str(), theirs[1]["liquidity"].as_str()),
        (Some(buy.as_str()), Some("taker"))
    );
    for (frames, other) in [(&mine, "bob"), (&theirs, "alice")] {
        for v in frames {
            assert!(!v.to_string().contains(other), "{other} leaks into {v}");
        }
    }
    // Nothing of alice's cancel reaches bob.
    let late = b.next(Duration::from_secs(1));
    assert!(late.as_ref().is_none_or(|v| v["type"] != "order"), "{late:?}");
}

#[test]
fn the_broker_going_away_and_coming_back_is_told() {
    let mut s = stack(1, 1, false);
    let gw = s.svc("gateway-1");
    let mut ws = Ws::connect(&gw, &[]);
    assert_eq!(ws.until(Duration::from_secs(5), |v| v["type"] == "welcome")["feed"], "up");
    ws.send(json!({"op": "subscribe", "channel": "trades:ABC"}));
    ws.until(Duration::from_secs(5), |v| v["type"] == "subscribed");
    s.kill("broker");
    ws.until(Duration::from_secs(15), |v| v["type"] == "status" && v["feed"] == "down");
    s.start_again("broker");
    ws.until(Duration::from_secs(30), |v| v["type"] == "status" && v["feed"] == "up");
}

/// After the broker comes back, orders are accepted again and their trade reaches the socket.
/// (The two orders come from two users: one account's orders do not trade with each other.)
#[test]
fn after_a_broker_restart_trades_flow_again() {
    let mut s = stack(1, 1, false);
    let gw = s.svc("gateway-1");
    let users = [s.as_user("gateway-1", "frank"), s.as_user("gateway-1", "grace")];
    let mut ws = Ws::connect(&gw, &[]);
    ws.send(json!({"op": "subscribe", "channel": "trades:ABC"}));
    ws.until(Duration::from_secs(5), |v| v["type"] == "subscribed");
    s.kill("broker");
    ws.until(Duration::from_secs(15), |v| v["type"] == "status" && v["feed"] == "down");
    s.start_again("broker");
    ws.until(Duration::from_secs(30), |v| v["type"] == "status" && v["feed"] == "up");
    for (i, (side, user)) in ["sell", "buy"].iter().zip(&users).enumerate() {
        let body = json!({"client_order_id": format!("f-{i}"), "symbol": "ABC", "side": side, "type": "limit", "price": "100.00", "qty": "1"});
        let ok = wait_until("order entry back", Duration::from_secs(30), || {
            user.client()
                .post(user.url("/api/v1/orders"))
                .json(&body)
                .send()
                .is_ok_and(|r| r.status().as_u16() == 202)
        });
        assert!(ok.is_ok(), "{}", s.tail("gateway-1"));
    }
    let trade = ws.until(Duration::from_secs(30), |v| v["type"] == "trade");
    assert_eq!((trade["price"].as_str(), trade["qty"].as_str()), (Some("100.00"), Some("1")));
}
