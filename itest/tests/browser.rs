//! The trader's desk in a real browser: Debian's Chromium, driven by `playwright-core` from
//! `frontend/tests/desk.test.mjs`, against the real stack behind nginx. The script does the
//! clicking and checking; this test starts the stack, runs the script, and does what the script
//! asks of the stack over its stdio — one line `HARNESS {"op": …}` out, one line `ok` or
//! `error: …` back: kill or start a process, give a user a role. Screenshots go to
//! `target/desk-screenshots/` (or `LAB_ARTIFACTS`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use itest::Stack;
use serde_json::Value;

/// The script stops itself well within this; past it, the test kills it.
const LIMIT: Duration = Duration::from_secs(360);

/// The script's process, killed (with its Chromium, which dies with its pipe) if the test ends
/// early.
struct Script(std::process::Child);

impl Drop for Script {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn handle(stack: &mut Stack, request: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(request) else { return format!("error: not JSON: {request}") };
    let name = v["name"].as_str().unwrap_or_default();
    let known = stack.sup.plan().get(name).is_some();
    match v["op"].as_str() {
        Some("kill") if known => {
            stack.kill(name);
            "ok".into()
        }
        Some("start") if known => {
            stack.start_again(name);
            "ok".into()
        }
        Some("grant") => {
            let (user, role) =
                (v["user"].as_str().unwrap_or_default(), v["role"].as_str().unwrap_or_default());
            match stack.grant(user, role) {
                Ok(()) => "ok".into(),
                Err(e) => format!("error: {e:#}"),
            }
        }
        _ => format!("error: unknown request {request}"),
    }
}

#[test]
fn the_desk_in_chromium() {
    let root = stack::plan::repo_root();
    let script = root.join("frontend/tests/desk.test.mjs");
    assert!(
        root.join("frontend/node_modules/playwright-core").is_dir() && root.join("frontend/vendor").is_dir(),
        "the frontend's npm packages are missing: `./lab test` installs them (npm ci && npm run build in frontend/)"
    );
    let artifacts = std::env::var("LAB_ARTIFACTS").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), Into::into);
        target.join("desk-screenshots")
    });
    std::fs::create_dir_all(&artifacts).unwrap();
    let mut stack = Stack::start(2, 2, true);
    let url = stack.svc("nginx").url("");
    let child = Command::new("node")
        .arg(&script)
        .env("LAB_URL", &url)
        .env("LAB_ARTIFACTS", &artifacts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (apt-get install nodejs)");
    let mut child = Script(child);
    let child = &mut child.0;
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut log = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                eprintln!("desk: {line}");
                if let Some(request) = line.strip_prefix("HARNESS ") {
                    let answer = handle(&mut stack, request);
                    eprintln!("harness: {answer}");
                    writeln!(stdin, "{answer}").expect("the script reads its answers");
                }
                log.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if started.elapsed() > LIMIT {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the browser script ran past {LIMIT:?}; its output:\n{}", log.join("\n"));
                }
            }
        }
    }
    let status = child.wait().expect("the script's exit");
    assert!(status.success(), "the browser script failed ({status}); its output:\n{}", log.join("\n"));
    for shot in ["desk.png", "desk-phone.png", "operator.png", "system.png"] {
        let len = std::fs::metadata(artifacts.join(shot)).map_or(0, |m| m.len());
        assert!(len > 1000, "{shot} was not saved in {}", artifacts.display());
    }
}
