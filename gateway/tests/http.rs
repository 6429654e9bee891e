//! The gateway in-process ([`gateway::run`] on a free port, stopped through its shutdown handle),
//! with no upstream listening: the endpoints every service has, the JSON 404, and a 503 that names
//! the missing upstream. Flows through real upstreams are `itest`'s.

use std::time::{Duration, Instant};

use common::shutdown::Shutdown;
use serde_json::Value;

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Running {
    base: String,
    shutdown: Shutdown,
    task: actix_web::rt::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the gateway with every upstream down; returns once it answers.
async fn start() -> Running {
    let port = free_port();
    let config = gateway::Config {
        listen: format!("127.0.0.1:{port}"),
        instance: "gateway-t".into(),
        order_svcs: vec![format!("http://127.0.0.1:{}", free_port())],
        matcher: format!("http://127.0.0.1:{}", free_port()),
        body_limit: 4096,
        upstream_timeout: Duration::from_secs(2),
        accounts: None,
        limits: gateway::limits::Config::default(),
        trusted_proxies: gateway::accounts::TrustedProxies::Only(vec![]),
        ws: gateway::ws::Config::new(&format!("127.0.0.1:{}", free_port())),
        watch: vec![],
    };
    let shutdown = Shutdown::new();
    let task = actix_web::rt::spawn(gateway::run(config, shutdown.clone()));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "the gateway did not start");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    Running { base, shutdown, task }
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

#[actix_web::test]
async fn the_gateway_answers_every_error_as_json_and_stops_on_its_handle() {
    let g = start().await;
    let http = reqwest::Client::new();
    let (status, v) = send(http.get(format!("{}/healthz", g.base))).await;
    assert_eq!((status, &v["status"]), (200, &Value::from("ok")));
    let (status, v) = send(http.get(format!("{}/whoami", g.base))).await;
    assert_eq!((status, &v["service"], &v["instance"]), (200, &"gateway".into(), &"gateway-t".into()));
    let (status, v) = send(http.get(format!("{}/nope", g.base))).await;
    assert_eq!((status, &v["error"]["code"]), (404, &"not_found".into()));

    // Bug: a write that reached no order-svc said `broker_unavailable`.
    let order =
        r#"{"client_order_id":"c","symbol":"ABC","side":"buy","type":"limit","price":"100","qty":"1"}"#;
    let (status, v) = send(http.post(format!("{}/api/v1/orders", g.base)).body(order)).await;
    assert_eq!((status, &v["error"]["code"]), (503, &"order_svc_unavailable".into()), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("nothing was sent"), "{v}");
    let (status, v) = send(http.delete(format!("{}/api/v1/orders/5", g.base))).await;
    assert_eq!((status, &v["error"]["code"]), (503, &"order_svc_unavailable".into()), "{v}");
    let (status, v) = send(http.get(format!("{}/api/v1/trades?symbol=ABC", g.base))).await;
    assert_eq!((status, &v["error"]["code"]), (503, &"matcher_unavailable".into()), "{v}");

    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = loop {
        let (status, v) = send(http.get(format!("{}/readyz", g.base))).await;
        if status != 200 || Instant::now() > deadline {
            break (status, v);
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((ready.0, &ready.1["error"]["code"]), (503, &"upstream_unavailable".into()), "{}", ready.1);

    // The system map shows the upstreams it watches by default, down, with the reason.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (status, v) = loop {
        let (status, v) = send(http.get(format!("{}/api/v1/system", g.base))).await;
        if v["checked_ms"].as_u64() != Some(0) || Instant::now() > deadline {
            break (status, v);
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((status, &v["served_by"]), (200, &"gateway-t".into()), "{v}");
    let names: Vec<&str> = v["nodes"].as_array().unwrap().iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["order-svc-1", "matcher"], "{v}");
    for node in v["nodes"].as_array().unwrap() {
        assert_eq!((&node["up"], &node["ready"]), (&false.into(), &false.into()), "{node}");
        assert!(node["error"].as_str().is_some_and(|e| !e.is_empty()), "{node}");
    }
    assert_eq!(v["edges"], serde_json::json!([]), "no flow joins these two: {v}");

    let metrics = http.get(format!("{}/metrics", g.base)).send().await.unwrap().text().await.unwrap();
    for needle in ["upstream_write_seconds", r#"route="/api/v1/orders",status="503""#] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}:\n{metrics}");
    }

    g.shutdown.trigger();
    let stopped = actix_web::rt::time::timeout(Duration::from_secs(5), g.task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "run returns once its handle fires: {stopped:?}");
    assert!(http.get(format!("{}/healthz", g.base)).send().await.is_err(), "the port is closed");
}
