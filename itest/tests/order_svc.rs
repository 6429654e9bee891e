//! order-svc against the real broker: what it acknowledges is in the log, where its id says;
//! what it refuses never reaches the log; a dead broker gives 503, and service resumes when the
//! broker is back.

use std::time::{Duration, Instant};

use common::envelope::{decode_command, decode_command_traced};
use common::{CommandKind, OrderId, Price, Qty, Side, SymbolTable, Timestamp};
use itest::{http, Service};
use serde_json::{json, Value};

const PARTITIONS: i32 = 2;

/// The broker (the stack's topics: `orders` has [`PARTITIONS`]) and one order-svc, no matcher.
struct Stack {
    svc: Service,
    s: itest::Stack,
}

fn stack(delivery_timeout_ms: u64) -> Stack {
    let s = itest::Stack::with(
        |o| {
            o.matcher = false;
            o.order_svcs = 1;
            o.gateways = 0;
            o.nginx_front = false;
        },
        |plan| {
            let svc = plan.procs.iter_mut().find(|p| p.name == "order-svc-1").expect("order-svc-1");
            svc.args.extend(["--delivery-timeout-ms".to_owned(), delivery_timeout_ms.to_string()]);
        },
    );
    assert!(stack::plan::TOPICS.contains(&("orders", PARTITIONS)));
    Stack { svc: s.svc("order-svc-1"), s }
}

fn post(svc: &Service, path: &str, body: &str) -> (u16, Value) {
    post_with(svc, path, body, None)
}

/// Posts with an `x-gateway-ts` header, as a gateway would send it.
fn post_with(svc: &Service, path: &str, body: &str, gateway_ts: Option<&str>) -> (u16, Value) {
    let mut r = http().post(svc.url(path)).header("content-type", "application/json").body(body.to_owned());
    if let Some(ts) = gateway_ts {
        r = r.header("x-gateway-ts", ts);
    }
    let r = r.send().expect("request");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn acknowledged_orders_are_in_the_log_where_their_id_says() {
    let s = stack(5_000);
    // As if through a gateway: its receive time travels in the message.
    let (status, v1) = post_with(
        &s.svc,
        "/api/v1/orders",
        r#"{"client_order_id":"c-1","symbol":"ABC","side":"sell","type":"limit","price":"100.05","qty":"5"}"#,
        Some("1700000000000000001"),
    );
    assert_eq!(status, 202, "{v1}");
    assert_eq!((v1["client_order_id"].as_str(), v1["status"].as_str()), (Some("c-1"), Some("accepted")));
    // A malformed stamp is a measurement lost, not an order refused.
    let (status, lab) =
        post_with(&s.svc, "/order", r#"{"id":"ui-123","symbol":"ABC","price":100,"qty":5}"#, Some("soon"));
    assert_eq!(status, 202, "{lab}");
    assert_eq!(lab["status"], "received");
    assert_eq!(lab["handled_by"], "order-svc-1");
    assert_eq!(
        lab["order"],
        json!({"id": "ui-123", "symbol": "ABC", "price": 100.0, "qty": 5, "side": "buy", "account": "anonymous"})
    );

    let table = SymbolTable::default();
    let msgs = s.s.read_all("orders", PARTITIONS, 2, Duration::from_secs(20)).expect("read");
    assert_eq!(msgs.len(), 2, "both orders are in the log");
    for (answer, client, side, price, gateway_in) in [
        (&v1, "c-1", Side::Sell, 10_005, Some(Timestamp(1_700_000_000_000_000_001))),
        (&lab, "ui-123", Side::Buy, 10_000, None),
    ] {
        let id: OrderId = answer["order_id"].as_str().unwrap().parse().unwrap();
        let (p, o, payload) = msgs
            .iter()
            .find(|(p, o, _)| i64::from(id.partition()) == i64::from(*p) && id.offset() as i64 == *o)
            .unwrap_or_else(|| panic!("no message at {}/{} for {client}", id.partition(), id.offset()));
        let (cmd, trace) =
            decode_command_traced(payload, OrderId::new(*p as u16, *o as u64).unwrap(), &table).unwrap();
        assert_eq!(trace.gateway_in, gateway_in, "{client}");
        let CommandKind::New(order) = cmd.kind else { panic!("{cmd:?}") };
        assert_eq!(order.client_order_id.as_str(), client);
        assert_eq!((order.side, order.price, order.qty), (side, Some(Price(price)), Qty(5)));
        assert!(cmd.ts.0 > 1_700_000_000_000_000_000, "publish time travels in the command");
    }
}

#[test]
fn refused_requests_publish_nothing() {
    let s = stack(5_000);
    let base = r#""client_order_id":"c","symbol":"ABC","side":"buy","type":"limit""#;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/api/v1/orders", "{not json".into(), 400, "malformed_json"),
        ("/api/v1/orders", format!("{{{base}}}"), 400, "bad_field"),
        ("/api/v1/orders", format!("{{{base},\"qty\":1,\"price\":1,\"extra\":true}}"), 400, "bad_field"),
        ("/api/v1/orders", format!("{{{base},\"qty\":-5,\"price\":1}}"), 400, "bad_field"),
        ("/api/v1/orders", format!("{{{base},\"qty\":0,\"price\":1}}"), 400, "bad_field"),
        ("/api/v1/orders", format!("{{{base},\"qty\":\"NaN\",\"price\":1}}"), 400, "bad_field"),
        ("/api/v1/orders", format!("{{{base},\"qty\":1e300,\"price\":1}}"), 400, "bad_field"),
        ("/api/v1/orders", format!("{{{base},\"qty\":1,\"price\":\"100.001\"}}"), 422, "rule_violation"),
        ("/api/v1/orders", format!("{{{base},\"qty\":99999999,\"price\":1}}"), 422, "rule_violation"),
        (
            "/api/v1/orders",
            r#"{"client_order_id":"c","symbol":"NOPE","side":"buy","type":"limit","qty":1,"price":1}"#.into(),
            400,
            "unknown_symbol",
        ),
        ("/order", r#"{"id":"x","symbol":"ABC","price":100.001,"qty":1}"#.into(), 422, "rule_violation"),
        ("/order", r#"{"id":"x","symbol":"ABC","qty":1}"#.into(), 400, "bad_field"),
        (
            "/api/v1/orders",
            format!("{{{base},\"qty\":1,\"price\":1,\"pad\":\"{}\"}}", "x".repeat(10_000)),
            413,
            "body_too_large",
        ),
    ];
    for (path, body, status, code) in &cases {
        let (got, v) = post(&s.svc, path, body);
        assert_eq!(got, *status, "{path} {body:.80} -> {v}");
        assert_eq!(v["error"]["code"], *code, "{path} {body:.80} -> {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (got, v) = post(&s.svc, "/api/v1/orders", &format!("{{{base},\"qty\":1,\"price\":\"99.99\"}}"));
    assert_eq!(got, 202, "{v}");
    let msgs = s.s.read_all("orders", PARTITIONS, 10, Duration::from_secs(5)).expect("read");
    assert_eq!(msgs.len(), 1, "only the one good order reached the log");
}

#[test]
fn a_cancel_goes_to_the_partition_its_order_id_names() {
    let s = stack(5_000);
    let (status, v) = post(
        &s.svc,
        "/api/v1/orders",
        r#"{"client_order_id":"k","symbol":"DEF","side":"buy","type":"limit","price":"50","qty":"10"}"#,
    );
    assert_eq!(status, 202, "{v}");
    let id: OrderId = v["order_id"].as_str().unwrap().parse().unwrap();
    let r = http().delete(s.svc.url(&format!("/api/v1/orders/{id}"))).send().unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let cancel: Value = r.json().unwrap();
    let cancel_id: OrderId = cancel["cancel_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(cancel_id.partition(), id.partition());
    let msgs = s.s.read_all("orders", PARTITIONS, 2, Duration::from_secs(20)).unwrap();
    let (_, _, payload) = msgs
        .iter()
        .find(|(p, o, _)| *p as u16 == cancel_id.partition() && *o as u64 == cancel_id.offset())
        .expect("cancel in the log");
    let cmd = decode_command(payload, cancel_id, &SymbolTable::default()).unwrap();
    assert!(matches!(cmd.kind, CommandKind::Cancel(c) if c.order_id == id), "{cmd:?}");
    let r = http().delete(s.svc.url("/api/v1/orders/not-a-number")).send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[test]
fn a_dead_broker_gives_503_in_bounded_time_then_service_resumes() {
    let mut s = stack(2_000);
    let order = |n: u32| {
        format!(
            r#"{{"client_order_id":"b{n}","symbol":"ABC","side":"buy","type":"limit","price":"99","qty":"1"}}"#
        )
    };
    assert_eq!(post(&s.svc, "/api/v1/orders", &order(0)).0, 202);
    s.s.kill("broker");
    let started = Instant::now();
    let (status, v) = post(&s.svc, "/api/v1/orders", &order(1));
    let took = started.elapsed();
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "broker_unavailable");
    assert!(v["error"]["message"].as_str().unwrap().contains("outcome is unknown"), "{v}");
    assert!(took < Duration::from_secs(8), "503 took {took:?}");
    let ready = http().get(s.svc.url("/readyz")).send().unwrap();
    assert_eq!(ready.status().as_u16(), 503, "not ready without a broker");

    s.s.start_again("broker");
    let mut n = 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let (status, _) = post(&s.svc, "/api/v1/orders", &order(n));
        n += 1;
        if status == 202 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status, 202, "service resumed after the broker came back");
    assert_eq!(http().get(s.svc.url("/readyz")).send().unwrap().status().as_u16(), 200);
}

#[test]
fn every_service_endpoint_answers() {
    let s = stack(5_000);
    let who: Value = http().get(s.svc.url("/whoami")).send().unwrap().json().unwrap();
    assert_eq!((who["service"].as_str(), who["instance"].as_str()), (Some("order-svc"), Some("order-svc-1")));
    assert_eq!(http().get(s.svc.url("/readyz")).send().unwrap().status().as_u16(), 200);
    post(&s.svc, "/order", r#"{"id":"m1","symbol":"ABC","price":100,"qty":1}"#);
    let metrics = http().get(s.svc.url("/metrics")).send().unwrap().text().unwrap();
    for needle in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "order_ack_seconds_count",
        "route=\"/order\"",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}");
    }
    let r = http().get(s.svc.url("/nope")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "not_found");
}
