//! The simulated market maker on the real stack: started by the plan behind nginx, it signs its
//! accounts up, quotes both sides of every symbol through the public API, and crosses now and
//! then, so the books are never empty and trades happen; its own health and metrics are served
//! like every service's.

use std::time::Duration;

use itest::{wait_until, Stack};
use serde_json::Value;

fn get(url: &str) -> Value {
    itest::http().get(url).send().and_then(|r| r.json()).unwrap_or(Value::Null)
}

#[test]
fn the_simulated_market_quotes_every_symbol_and_trades() {
    let s = Stack::with(
        |o| o.sim = true,
        |p| {
            let sim = p.procs.iter_mut().find(|p| p.name == "market-sim").expect("market-sim in the plan");
            sim.args.extend(["--rate".into(), "10".into(), "--seed".into(), "7".into()]);
        },
    );
    let nginx = s.svc("nginx");
    let symbols: Vec<String> = get(&nginx.url("/api/v1/symbols"))["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .filter_map(|x| x["symbol"].as_str().map(str::to_owned))
        .collect();
    assert!(symbols.len() >= 3, "{symbols:?}");
    let quoted = |sym: &str| {
        let book = get(&nginx.url(&format!("/api/v1/book/{sym}")));
        let side = |k: &str| book[k].as_array().is_some_and(|l| !l.is_empty());
        side("bids") && side("asks")
    };
    wait_until("both sides quoted on every symbol", Duration::from_secs(40), || {
        symbols.iter().all(|x| quoted(x))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.tail("market-sim")));
    let traded = |sym: &str| {
        get(&nginx.url(&format!("/api/v1/trades?symbol={sym}&limit=1")))["trades"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    };
    wait_until("a trade", Duration::from_secs(40), || symbols.iter().any(|x| traded(x)))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", s.tail("market-sim")));
    // Its best bid stays below its best ask (it never crosses itself), on every symbol.
    for sym in &symbols {
        let book = get(&nginx.url(&format!("/api/v1/book/{sym}")));
        let best = |k: &str| book[k][0][0].as_str().and_then(|p| p.parse::<f64>().ok());
        if let (Some(bid), Some(ask)) = (best("bids"), best("asks")) {
            assert!(bid < ask, "{sym}: {book}");
        }
    }
    let sim = s.svc("market-sim");
    assert_eq!(get(&sim.url("/readyz"))["status"], "ready", "{}", s.tail("market-sim"));
    let metrics = itest::http().get(sim.url("/metrics")).send().unwrap().text().unwrap();
    for needle in ["sim_actions_total", "kind=\"place\""] {
        assert!(metrics.contains(needle), "{needle} not in:\n{metrics}");
    }
    // The system map shows it.
    wait_until("market-sim on the map", Duration::from_secs(10), || {
        get(&nginx.url("/api/v1/system"))["nodes"]
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n["name"] == "market-sim" && n["up"] == true))
    })
    .unwrap();
}
