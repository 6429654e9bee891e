//! The gateway in front of the order-svc pool and the matcher front: the original lab's flow and
//! the v1 API through it, validation at the edge (nothing reaches order entry), request ids, and
//! failover when an order-svc instance dies.

use std::time::Duration;

use itest::{wait_until, Kind, Service, Stack};
use serde_json::Value;

fn stack() -> Stack {
    Stack::start(2, 1, false)
}

/// The gateway, as the signed-in user `alice`.
fn gateway(s: &Stack) -> Service {
    s.as_user("gateway-1", "alice")
}

fn post(svc: &Service, path: &str, body: &str) -> (u16, Value, Option<String>) {
    let r = svc
        .client()
        .post(svc.url(path))
        .header("content-type", "application/json")
        .header("x-request-id", "req-42")
        .body(body.to_owned())
        .send()
        .unwrap();
    let rid = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (r.status().as_u16(), r.json().unwrap_or(Value::Null), rid)
}

fn get(svc: &Service, path: &str) -> (u16, Value) {
    let r = svc.client().get(svc.url(path)).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn bad_requests_stop_at_the_edge() {
    let s = stack();
    let base = r#""client_order_id":"c","symbol":"ABC","side":"buy","type":"limit""#;
    let cases = [
        ("/api/v1/orders", "{oops".to_owned(), 400),
        ("/api/v1/orders", format!("{{{base},\"qty\":1,\"price\":1,\"typo\":1}}"), 400),
        ("/api/v1/orders", format!("{{{base},\"qty\":0,\"price\":1}}"), 400),
        ("/api/v1/orders", format!("{{{base},\"qty\":1,\"price\":\"1.001\"}}"), 422),
        ("/api/v1/orders", format!("{{{base},\"qty\":1,\"price\":1,\"pad\":\"{}\"}}", "x".repeat(8000)), 413),
        ("/place_order", r#"{"id":"x","symbol":"NOPE","price":1,"qty":1}"#.to_owned(), 400),
    ];
    for (path, body, status) in &cases {
        let (got, v, rid) = post(&gateway(&s), path, body);
        assert_eq!(got, *status, "{path} {body:.60} -> {v}");
        assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{v}");
        assert_eq!(rid.as_deref(), Some("req-42"), "the request id comes back");
    }
    let r = gateway(&s).client().delete(gateway(&s).url("/api/v1/orders/xyz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.headers().get("x-request-id").is_some(), "a request id is assigned when none is given");
    let reached: u64 = s.all(Kind::OrderSvc).iter().map(itest::order_writes).sum();
    assert_eq!(reached, 0, "no refused request reached order entry");
}

#[test]
fn the_lab_flow_and_the_v1_api_through_the_gateway_with_failover() {
    let mut s = stack();
    // The original lab's flow: two crossing orders from two users (one account's orders do not
    // trade with each other), then the trade, looked up for the buyer.
    let (st, sell, _) = post(
        &s.as_user("gateway-1", "bob"),
        "/place_order",
        r#"{"id":"s-1","symbol":"ABC","price":100,"qty":5,"side":"sell"}"#,
    );
    assert_eq!(st, 202, "{sell}");
    assert_eq!(sell["status"], "received");
    let (st, buy, _) =
        post(&gateway(&s), "/place_order", r#"{"id":"b-1","symbol":"ABC","price":100,"qty":5}"#);
    assert_eq!(st, 202, "{buy}");
    let handled: Vec<&str> = [&sell, &buy].iter().filter_map(|v| v["handled_by"].as_str()).collect();
    assert_eq!(handled.len(), 2);
    wait_until("trade", Duration::from_secs(30), || get(&gateway(&s), "/trade/b-1").1["found"] == true)
        .unwrap();
    assert_eq!(get(&s.as_user("gateway-1", "bob"), "/trade/b-1").1["found"], false, "not bob's order");

    // v1: place, status, book, trades, cancel, through the gateway.
    let (st, placed, _) = post(
        &gateway(&s),
        "/api/v1/orders",
        r#"{"client_order_id":"v-1","symbol":"ABC","side":"buy","type":"limit","price":"99.50","qty":"2"}"#,
    );
    assert_eq!(st, 202, "{placed}");
    let id = placed["order_id"].as_str().unwrap().to_owned();
    let mut order = Value::Null;
    wait_until("resting", Duration::from_secs(30), || {
        order = get(&gateway(&s), &format!("/api/v1/orders/{id}")).1;
        order["status"] == "resting"
    })
    .unwrap();
    // The order's path starts at the gateway: each hop at or after the one before.
    let hops: Vec<u64> = ["gateway_ns", "published_ns", "consumed_ns", "matched_ns"]
        .iter()
        .map(|h| order["hops"][h].as_u64().unwrap_or_else(|| panic!("hop {h}: {order}")))
        .collect();
    assert!(hops.windows(2).all(|w| w[0] <= w[1]), "hops out of order: {order}");
    let (_, book) = get(&gateway(&s), "/api/v1/book/ABC?depth=1");
    assert_eq!(book["bids"][0], serde_json::json!(["99.50", "2"]), "{book}");
    let (_, trades) = get(&gateway(&s), "/api/v1/trades?symbol=ABC");
    assert_eq!(trades["trades"].as_array().map(Vec::len), Some(1));
    let (st, symbols) = get(&gateway(&s), "/api/v1/symbols");
    assert_eq!(st, 200, "{symbols}");
    let r = gateway(&s).client().delete(gateway(&s).url(&format!("/api/v1/orders/{id}"))).send().unwrap();
    assert_eq!(r.status().as_u16(), 202);
    wait_until("canceled", Duration::from_secs(30), || {
        get(&gateway(&s), &format!("/api/v1/orders/{id}")).1["status"] == "canceled"
    })
    .unwrap();
    let (_, by_client) = get(&gateway(&s), "/api/v1/orders?symbol=ABC&client_order_id=v-1");
    assert_eq!(by_client["order_id"], id.as_str());

    // One order-svc dies: every request sent after it is served by the other.
    s.kill("order-svc-1");
    for i in 0..20 {
        let body = format!(
            r#"{{"client_order_id":"f-{i}","symbol":"ABC","side":"sell","type":"limit","price":"120","qty":"1"}}"#
        );
        let (st, v, _) = post(&gateway(&s), "/api/v1/orders", &body);
        assert_eq!(st, 202, "request {i} after the kill: {v}");
    }
    let who: Value = gateway(&s).client().get(gateway(&s).url("/whoami")).send().unwrap().json().unwrap();
    assert_eq!(who["service"], "gateway");
}
