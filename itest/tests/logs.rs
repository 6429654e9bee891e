//! The services' logs (`common::http::logging`): plain text without colour codes when written to a
//! file, one JSON object a line with `LOG_FORMAT=json`, and an unknown format named in a warning.

use std::time::Duration;

use itest::{free_port, http, our_binary, wait_until, Proc, TempDir};
use serde_json::Value;

/// Starts a gateway (it needs nothing else to start) with `LOG_FORMAT=format`; returns its log.
fn gateway_log(format: Option<&str>) -> String {
    let dir = TempDir::new();
    let port = free_port();
    let args = ["--listen".to_owned(), format!("127.0.0.1:{port}")];
    let mut env = vec![("RUST_LOG", "info".to_owned())];
    if let Some(f) = format {
        env.push(("LOG_FORMAT", f.to_owned()));
    }
    let mut proc = Proc::spawn("gateway", &our_binary("gateway"), &args, &env, dir.path()).expect("gateway");
    let url = format!("http://127.0.0.1:{port}/healthz");
    wait_until("gateway", Duration::from_secs(20), || http().get(&url).send().is_ok()).unwrap();
    proc.terminate(Duration::from_secs(10)).expect("stops on SIGTERM");
    std::fs::read_to_string(&proc.log).unwrap()
}

#[test]
fn logs_are_plain_text_or_json_lines_and_a_bad_format_is_named() {
    let text = gateway_log(None);
    assert!(text.contains("gateway starting"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes in a log file: {text:?}");

    let json = gateway_log(Some("json"));
    let lines: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    assert!(lines.iter().any(|l| l["fields"]["message"] == "gateway starting"), "{json}");

    let bad = gateway_log(Some("yaml"));
    assert!(bad.contains("LOG_FORMAT is `text` or `json`") && bad.contains("yaml"), "{bad}");
    assert!(bad.contains("gateway starting"), "still logs, as text: {bad}");
}
