//! Every service's `/metrics` follows Prometheus's conventions as Prometheus's own linter reads
//! them (`promtool check metrics`, from Debian's `prometheus` package): counters end in `_total`,
//! histograms are in base units, every metric has help text — on a running stack, after traffic,
//! so the per-route and per-kind series exist. And the stack's real Prometheus scrapes them all.

use std::io::Write;
use std::process::{Command, Stdio};

use std::time::Duration;

use itest::{wait_until, Stack};
use serde_json::Value;

/// `promtool check metrics` on `text`: its complaints, if any.
fn lint(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

#[test]
fn every_service_s_metrics_pass_promtool() {
    // The linter catches what it should: this check can fail.
    assert!(lint("# HELP orders x\n# TYPE orders counter\norders 1\n").unwrap_err().contains("_total"));

    let s = Stack::with(
        |o| {
            o.sim = true;
            o.prometheus = true;
        },
        |_| {},
    );
    // Some traffic first: orders, a trade, reads, a refusal.
    let alice = s.as_user("nginx", "alice");
    for (side, cid) in [("sell", "m-1"), ("buy", "m-2")] {
        let body = serde_json::json!({"client_order_id": cid, "symbol": "ABC", "side": side, "type": "limit", "price": "100", "qty": "1"});
        let r = alice.client().post(alice.url("/api/v1/orders")).json(&body).send().unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    let _ = alice.client().get(alice.url("/api/v1/book/NOPE")).send();
    let _ = alice.client().get(alice.url("/api/v1/system")).send();
    let ours = s.sup.plan().scraped();
    assert_eq!(ours.len(), 6, "matcher, two order-svc, two gateways, market-sim");
    let mut exported = std::collections::BTreeSet::new();
    for p in ours {
        let text = itest::http().get(p.url("/metrics")).send().unwrap().text().unwrap();
        assert!(text.contains("# TYPE"), "{}: {text}", p.name);
        if let Err(said) = lint(&text) {
            panic!("{}'s /metrics fails promtool:\n{said}", p.name);
        }
        let series = text.lines().filter(|l| !l.starts_with('#'));
        exported.extend(series.filter_map(|l| l.split(['{', ' ']).next()).map(str::to_owned));
    }

    // Prometheus scrapes every one of them, each labelled with its process.
    let prometheus = s.svc("prometheus");
    let get = |path: &str| {
        itest::http().get(prometheus.url(path)).send().and_then(|r| r.json::<Value>()).unwrap_or(Value::Null)
    };
    let mut targets = Value::Null;
    wait_until("every target up in Prometheus", Duration::from_secs(30), || {
        targets = get("/api/v1/targets");
        let active = targets["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        active.len() == 6 && active.iter().all(|t| t["health"] == "up")
    })
    .unwrap_or_else(|e| panic!("{e:#}: {targets}\n{}", s.tail("prometheus")));
    let query = get("/api/v1/query?query=sum%20by%20(process)%20(http_requests_total)");
    let processes: Vec<&str> = query["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["metric"]["process"].as_str())
        .collect();
    assert_eq!(processes.len(), 6, "{query}");

    // The Grafana dashboard's queries: each parses in this Prometheus, and names only metrics the
    // services really export.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(s.sup.plan().root.join("grafana/dashboards/trading-lab.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 8, "{exprs:?}");
    let words = ["histogram_quantile"];
    for expr in &exprs {
        let url =
            reqwest::Url::parse_with_params(&prometheus.url("/api/v1/query"), [("query", expr)]).unwrap();
        let answer: Value = itest::http().get(url).send().unwrap().json().unwrap();
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        // Metric names: the snake_case words outside label matchers and strings.
        let outside: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
        let names = outside
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.contains('_') && !words.contains(w));
        for name in names {
            assert!(exported.contains(name), "{expr}: no service exports {name}");
        }
    }
}
