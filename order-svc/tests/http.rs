//! Order entry in-process ([`order_svc::run`] on a free port, stopped through its shutdown handle),
//! with no broker: the endpoints every service has, and every refusal in the one JSON shape,
//! including the ones actix's extractors make. Publishing to a real broker is `itest`'s.

use std::time::{Duration, Instant};

use common::shutdown::Shutdown;
use serde_json::Value;

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

#[actix_web::test]
async fn order_entry_answers_every_error_as_json_and_stops_on_its_handle() {
    let port = free_port();
    let config = order_svc::Config {
        listen: format!("127.0.0.1:{port}"),
        instance: "order-svc-t".into(),
        brokers: format!("127.0.0.1:{}", free_port()),
        topic: "orders".into(),
        delivery_timeout: Duration::from_secs(1),
        kafka_options: Vec::new(),
        body_limit: 4096,
        wake: Vec::new(),
    };
    let shutdown = Shutdown::new();
    let task = actix_web::rt::spawn(order_svc::run(config, shutdown.clone()));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "order-svc did not start");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, v) = send(http.get(format!("{base}/whoami"))).await;
    assert_eq!((status, &v["service"], &v["instance"]), (200, &"order-svc".into(), &"order-svc-t".into()));
    let (status, v) = send(http.get(format!("{base}/nope"))).await;
    assert_eq!((status, &v["error"]["code"]), (404, &"not_found".into()));
    // actix's query extractor answered these in plain text.
    let (status, v) = send(http.delete(format!("{base}/api/v1/orders/5?acount=a"))).await;
    assert_eq!((status, &v["error"]["code"]), (400, &"bad_field".into()), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("acount"), "names the unknown field: {v}");
    let (status, v) = send(http.delete(format!("{base}/api/v1/orders/x"))).await;
    assert_eq!((status, &v["error"]["code"]), (400, &"bad_field".into()), "{v}");
    let (status, v) = send(http.post(format!("{base}/api/v1/orders")).body("{oops")).await;
    assert_eq!((status, &v["error"]["code"]), (400, &"malformed_json".into()), "{v}");
    let (status, v) = send(http.get(format!("{base}/readyz"))).await;
    assert_eq!((status, &v["error"]["code"]), (503, &"broker_unavailable".into()), "{v}");
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in ["order_ack_seconds", r#"route="/api/v1/orders/{order_id}",status="400""#] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}:\n{metrics}");
    }

    shutdown.trigger();
    let stopped = actix_web::rt::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "run returns once its handle fires: {stopped:?}");
    assert!(http.get(format!("{base}/healthz")).send().await.is_err(), "the port is closed");
}
