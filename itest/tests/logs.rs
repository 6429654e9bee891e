//! The services' logs (`common::http::logging`): plain text without colour codes when written to a
//! file, one JSON object a line with `LOG_FORMAT=json`, and an unknown format named in a warning.

use std::time::Duration;

use itest::{Probe, Stack};
use serde_json::Value;

/// Starts a lone gateway (it needs nothing else to start) with `LOG_FORMAT=format`, stops it with
/// SIGTERM; returns its log.
fn gateway_log(format: Option<&str>) -> String {
    let mut s = Stack::with(
        |o| o.auth = false, // accounts need Redis
        |plan| {
            plan.procs.retain(|p| p.name == "gateway-1");
            let g = &mut plan.procs[0];
            g.deps.clear();
            g.ready = Probe::Http("/healthz".into()); // ready needs an order-svc
            if let Some(f) = format {
                g.env.push(("LOG_FORMAT".into(), f.to_owned()));
            }
        },
    );
    s.terminate("gateway-1", Duration::from_secs(10)).expect("stops on SIGTERM");
    std::fs::read_to_string(s.log_path("gateway-1")).unwrap()
}

#[test]
fn logs_are_plain_text_or_json_lines_and_a_bad_format_is_named() {
    let text = gateway_log(None);
    assert!(text.contains("gateway starting"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes in a log file: {text:?}");

    let json = gateway_log(Some("json"));
    // The supervisor's own lines (`[lab <time>] starting: …`) stand between the service's.
    let ours = json.lines().filter(|l| !l.starts_with("[lab "));
    let lines: Vec<Value> = ours.map(|l| serde_json::from_str(l).expect(l)).collect();
    assert!(lines.iter().any(|l| l["fields"]["message"] == "gateway starting"), "{json}");

    let bad = gateway_log(Some("yaml"));
    assert!(bad.contains("LOG_FORMAT is `text` or `json`") && bad.contains("yaml"), "{bad}");
    assert!(bad.contains("gateway starting"), "still logs, as text: {bad}");
}
