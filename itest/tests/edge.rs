//! The public edge: nginx → two gateways → two order-svc → broker → matcher → Redis → back.
//! The original lab's flow with its exact shapes, the v1 API and CORS through one door, `/whoami`
//! alternating between gateways, and a steady flow that survives a gateway, then an order-svc,
//! being SIGKILLed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use itest::{http, wait_until, Service, Signal, Stack};
use serde_json::{json, Value};

fn edge() -> Stack {
    Stack::start(2, 2, true)
}

fn nginx(e: &Stack) -> Service {
    e.svc("nginx")
}

fn post(e: &Stack, path: &str, body: &str) -> (u16, Value) {
    match http()
        .post(nginx(e).url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
    {
        Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

#[test]
fn the_original_lab_flow_and_the_v1_api_through_nginx() {
    let e = edge();
    let (st, sell) =
        post(&e, "/place_order", r#"{"id":"ui-1","symbol":"ABC","price":100,"qty":5,"side":"sell"}"#);
    assert_eq!(st, 202, "{sell}");
    assert_eq!(sell["status"], "received");
    assert_eq!(
        sell["order"],
        json!({"id": "ui-1", "symbol": "ABC", "price": 100.0, "qty": 5, "side": "sell", "account": "anonymous"})
    );
    let (st, buy) = post(&e, "/place_order", r#"{"id":"ui-2","symbol":"ABC","price":100,"qty":5}"#);
    assert_eq!(st, 202, "{buy}");
    let mut trade = Value::Null;
    wait_until("trade", Duration::from_secs(30), || {
        trade = http().get(nginx(&e).url("/trade/ui-2")).send().unwrap().json().unwrap();
        trade["found"] == true
    })
    .unwrap();
    let ts = trade["trade"]["ts"].as_f64().unwrap();
    assert_eq!(
        trade,
        json!({"found": true, "order_id": "ui-2", "trade": {"order_id": "ui-2", "price": 100.0, "qty": 5, "ts": ts}})
    );
    let missing: Value = http().get(nginx(&e).url("/trade/none")).send().unwrap().json().unwrap();
    assert_eq!(missing, json!({"found": false, "order_id": "none"}));

    let (st, placed) = post(
        &e,
        "/api/v1/orders",
        r#"{"client_order_id":"v","symbol":"ABC","side":"buy","type":"limit","price":"99","qty":"1"}"#,
    );
    assert_eq!(st, 202, "{placed}");
    let id = placed["order_id"].as_str().unwrap().to_owned();
    wait_until("resting", Duration::from_secs(30), || {
        http().get(nginx(&e).url(&format!("/api/v1/orders/{id}"))).send().unwrap().json::<Value>().unwrap()
            ["status"]
            == "resting"
    })
    .unwrap();
    let r =
        http().get(nginx(&e).url("/api/v1/book/ABC")).header("origin", "http://example.test").send().unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some("*"));
    assert!(r.headers().get("x-request-id").is_some(), "the request id comes back through nginx");
    let book: Value = r.json().unwrap();
    assert_eq!(book["bids"][0], json!(["99.00", "1"]));
    let pre = http().request(reqwest::Method::OPTIONS, nginx(&e).url("/api/v1/orders")).send().unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    let r = http().delete(nginx(&e).url(&format!("/api/v1/orders/{id}"))).send().unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let (st, bad) = post(
        &e,
        "/api/v1/orders",
        r#"{"client_order_id":"v","symbol":"ABC","side":"buy","type":"limit","price":"99.001","qty":"1"}"#,
    );
    assert_eq!((st, bad["error"]["code"].as_str()), (422, Some("rule_violation")));
    let page = http().get(nginx(&e).url("/")).send().unwrap().text().unwrap();
    assert!(page.contains("Trading Lab"));

    let mut seen = HashSet::new();
    for _ in 0..6 {
        let who: Value = http().get(nginx(&e).url("/whoami")).send().unwrap().json().unwrap();
        seen.insert(who["instance"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 2, "/whoami alternates between the two gateways: {seen:?}");
}

#[test]
fn a_steady_flow_survives_a_gateway_and_then_an_order_svc_being_killed() {
    let e = edge();
    let mut n = 0u32;
    let mut send = |e: &Stack| {
        n += 1;
        let body = format!(
            r#"{{"client_order_id":"k-{n}","symbol":"ABC","side":"buy","type":"limit","price":"95","qty":"1"}}"#
        );
        post(e, "/api/v1/orders", &body).0
    };
    for _ in 0..20 {
        assert_eq!(send(&e), 202);
    }
    // Kill a gateway while requests flow from another thread; count what fails in flight.
    let flow = |e: &Stack, kill: &mut dyn FnMut(), n0: u32| -> (u32, u32) {
        let stop = Instant::now() + Duration::from_secs(3);
        let (mut ok, mut failed) = (0u32, 0u32);
        let mut killed = false;
        let mut i = n0;
        while Instant::now() < stop {
            if !killed && Instant::now() + Duration::from_secs(2) > stop {
                kill();
                killed = true;
            }
            i += 1;
            let body = format!(
                r#"{{"client_order_id":"f-{i}","symbol":"ABC","side":"buy","type":"limit","price":"95","qty":"1"}}"#
            );
            match post(e, "/api/v1/orders", &body).0 {
                202 => ok += 1,
                _ => failed += 1,
            }
        }
        (ok, failed)
    };
    let (ok, failed) = flow(&e, &mut || e.signal("gateway-1", Signal::SIGKILL), 1_000);
    eprintln!("gateway killed under flow: {ok} ok, {failed} failed in flight");
    assert!(ok > 10, "the flow went on: {ok} ok");
    for _ in 0..20 {
        assert_eq!(send(&e), 202, "every request after the gateway kill succeeds");
    }
    let (ok, failed) = flow(&e, &mut || e.signal("order-svc-1", Signal::SIGKILL), 2_000);
    eprintln!("order-svc killed under flow: {ok} ok, {failed} failed in flight");
    for _ in 0..20 {
        assert_eq!(send(&e), 202, "every request after the order-svc kill succeeds");
    }
}

/// A JSON error body `{"error": {"code", "message"}}`: its code.
fn error_code(r: reqwest::blocking::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = r.text().unwrap_or_default();
    assert!(kind.starts_with("application/json"), "{status} answered as {kind:?}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status} not JSON ({e}): {body}"));
    assert!(v["error"]["message"].is_string(), "{body}");
    (status, v["error"]["code"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn nginx_answers_its_own_errors_in_the_json_shape() {
    let e = edge();
    let url = |path: &str| nginx(&e).url(path);
    let r = http().get(url("/api/v1/book/A%00B")).send().unwrap();
    assert_eq!(error_code(r), (400, "bad_request".into()));
    let r = http().get(url(&format!("/api/v1/book/{}", "A".repeat(20_000)))).send().unwrap();
    assert_eq!(error_code(r), (414, "uri_too_long".into()));
    let r = http()
        .post(url("/api/v1/orders"))
        .header("content-type", "application/json")
        .body(vec![b' '; 100_000])
        .send()
        .unwrap();
    assert_eq!(error_code(r), (413, "body_too_large".into()));
    // What the gateways answer passes through as they wrote it.
    let r = http().get(url("/api/v1/nope")).send().unwrap();
    assert_eq!(error_code(r), (404, "not_found".into()));

    // No gateway at all: nginx's 502, as JSON.
    e.signal("gateway-1", Signal::SIGKILL);
    e.signal("gateway-2", Signal::SIGKILL);
    let r = http().get(url("/api/v1/symbols")).send().unwrap();
    assert_eq!(error_code(r), (502, "gateway_unavailable".into()));
}

#[test]
fn a_gateway_that_does_not_answer_is_a_json_504() {
    let e = edge();
    // Stopped, not dead: connections are accepted, nothing is answered (10 s read timeout, each).
    e.signal("gateway-1", Signal::SIGSTOP);
    e.signal("gateway-2", Signal::SIGSTOP);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(40)).build().unwrap();
    let r = client.get(nginx(&e).url("/api/v1/symbols")).send().unwrap();
    assert_eq!(error_code(r), (504, "gateway_timeout".into()));
    e.signal("gateway-1", Signal::SIGCONT);
    e.signal("gateway-2", Signal::SIGCONT);
}
