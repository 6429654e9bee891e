//! The `lab` binary, as a user runs it, on free ports in a temp run directory: a supervised process
//! killed three times comes back each time after a doubling backoff, counted in `lab status`;
//! `lab down` leaves no process and no listening port; `lab up` interrupted half-way leaves no
//! process behind. Processes are checked by process group (every process the supervisor starts
//! leads its own), not by name.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use itest::{lab, wait_until, LabCleanup, Signal, TempDir};
use serde_json::Value;
use stack::probe::port_open;
use stack::state::State;
use stack::supervisor::{group_alive, kill_group};

fn status(dir: &Path) -> Vec<Value> {
    let out = lab(dir, &["status", "--json"]).output().expect("lab status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).expect("JSON").as_array().cloned().unwrap_or_default()
}

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter().find(|r| r["process"] == name).unwrap_or_else(|| panic!("no {name} in {rows:?}"))
}

#[test]
fn a_killed_process_comes_back_with_backoff_and_down_leaves_nothing() {
    let dir = TempDir::new();
    let _cleanup = LabCleanup(dir.path());
    let out = lab(dir.path(), &["up", "--detach", "--ports", "free"]).output().expect("lab up");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lab up --detach failed:\n{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("Trading Lab is up"), "{shown}");
    let rows = status(dir.path());
    let names: Vec<&str> = rows.iter().filter_map(|r| r["process"].as_str()).collect();
    let want = [
        "broker",
        "redis",
        "matcher",
        "order-svc-1",
        "order-svc-2",
        "gateway-1",
        "gateway-2",
        "nginx",
        "market-sim",
    ];
    assert_eq!(names, want, "{rows:?}");
    for r in &rows {
        assert_eq!(r["ready"], true, "{r}");
        assert_eq!(r["restarts"], 0, "{r}");
        for key in ["process", "pid", "port", "ready", "restarts", "uptime_s"] {
            assert!(r.get(key).is_some(), "status --json has {key}: {r}");
        }
    }
    let groups: BTreeSet<u32> = rows.iter().map(|r| r["pid"].as_u64().unwrap() as u32).collect();
    let ports: Vec<u16> = rows.iter().map(|r| r["port"].as_u64().unwrap() as u16).collect();

    let mut seen_groups = groups.clone();
    for k in 1..=3u64 {
        let pid = row(&status(dir.path()), "gateway-2")["pid"].as_u64().expect("gateway-2 runs") as u32;
        kill_group(pid, Signal::SIGKILL);
        wait_until(&format!("restart {k}"), Duration::from_secs(30), || {
            let rows = status(dir.path());
            let g = row(&rows, "gateway-2");
            g["restarts"] == k && g["ready"] == true && g["pid"].as_u64().is_some_and(|p| p as u32 != pid)
        })
        .unwrap_or_else(|e| panic!("{e}: {:?}", status(dir.path())));
        let state = State::read(dir.path()).expect("state file");
        let g = state.procs.iter().find(|p| p.name == "gateway-2").unwrap();
        assert_eq!(g.last_backoff_ms, Some(500 << (k - 1)), "the delay doubles: 0.5 s, 1 s, 2 s");
        seen_groups.extend(g.pid);
    }
    let log = std::fs::read_to_string(dir.path().join("lab.log")).unwrap();
    for (k, delay) in [(1, "0.5"), (2, "1.0"), (3, "2.0")] {
        let line = format!("restarting in {delay} s (restart {k})");
        assert!(log.contains(&line), "lab.log says {line:?}:\n{log}");
    }
    // The other processes were not touched.
    for r in status(dir.path()).iter().filter(|r| r["process"] != "gateway-2") {
        assert_eq!(r["restarts"], 0, "{r}");
    }

    // `lab cpu` measures every running process of the stack and the supervisor, once each (the
    // supervisor without its children, which are the stack's processes).
    let cpu = lab(dir.path(), &["cpu", "--seconds", "1", "--json"]).output().expect("lab cpu");
    assert!(cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));
    let cpu: serde_json::Value = serde_json::from_slice(&cpu.stdout).expect("lab cpu --json");
    let measured: Vec<&str> =
        cpu["processes"].as_array().unwrap().iter().map(|p| p["process"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = vec!["lab"];
    let rows = status(dir.path());
    want.extend(rows.iter().map(|r| r["process"].as_str().unwrap()));
    assert_eq!(measured, want, "{cpu}");
    let shares: Vec<f64> =
        cpu["processes"].as_array().unwrap().iter().map(|p| p["cpu_percent"].as_f64().unwrap()).collect();
    assert!(shares.iter().all(|s| (0.0..=200.0).contains(s)), "{cpu}");
    let total = cpu["total_percent"].as_f64().unwrap();
    assert!((total - shares.iter().sum::<f64>()).abs() < 1e-6, "{cpu}");
    let pids: std::collections::HashSet<u64> =
        cpu["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), want.len(), "a process each: {cpu}");

    let down = lab(dir.path(), &["down"]).output().expect("lab down");
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(said.contains("nginx") && said.contains("broker"), "down says what it stopped: {said}");
    for g in &seen_groups {
        assert!(!group_alive(*g), "process group {g} is gone after lab down");
    }
    for p in ports {
        assert!(!port_open(p), "port {p} is closed after lab down");
    }
    assert!(status(dir.path()).iter().all(|r| r["pid"].is_null() && r["ready"] == false));
    let cpu = lab(dir.path(), &["cpu", "--seconds", "1"]).output().expect("lab cpu");
    assert!(!cpu.status.success(), "nothing runs: nothing to measure");
    assert!(String::from_utf8_lossy(&cpu.stderr).contains("is running"), "{cpu:?}");
}

#[test]
fn interrupting_up_half_way_leaves_no_process_behind() {
    let dir = TempDir::new();
    let _cleanup = LabCleanup(dir.path());
    let mut up = lab(dir.path(), &["up", "--ports", "free", "--no-restart"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("lab up");
    // Half-way: the broker and Redis run, the matcher has been started, nginx has not.
    let mut groups = BTreeSet::new();
    wait_until("half-way", Duration::from_secs(60), || {
        let Some(state) = State::read(dir.path()) else { return false };
        groups.extend(state.procs.iter().filter_map(|p| p.pid));
        let started = |n: &str| state.procs.iter().any(|p| p.name == n && p.pid.is_some());
        started("broker") && started("redis") && started("matcher") && !started("nginx")
    })
    .unwrap();
    let ports: Vec<u16> = State::read(dir.path()).unwrap().procs.iter().map(|p| p.port).collect();
    kill_group(up.id(), Signal::SIGINT); // what Ctrl-C in its terminal does
    let exit = up.wait().unwrap();
    assert!(!exit.success(), "an interrupted start is a failure: {exit:?}");
    assert!(groups.len() >= 3, "{groups:?}");
    for g in &groups {
        assert!(!group_alive(*g), "process group {g} is gone after the interrupted start");
    }
    assert!(!group_alive(up.id()), "the supervisor's own group is gone");
    for p in ports {
        assert!(!port_open(p), "port {p} is closed");
    }
    let log = std::fs::read_to_string(dir.path().join("broker.log")).unwrap();
    assert!(log.contains("stopped"), "the broker was stopped by the supervisor: {log}");
}

#[test]
fn status_and_logs_refuse_what_does_not_exist() {
    let dir = TempDir::new();
    let out = lab(dir.path(), &["logs", "nope", "--no-follow"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no process \"nope\"") && err.contains("gateway-1"), "{err}");
    // Nothing ran here: every process is listed as down, on its fixed port.
    let rows = status(dir.path());
    assert_eq!(row(&rows, "nginx")["port"], 8080);
    assert!(rows.iter().all(|r| r["pid"].is_null()));
    let down = lab(dir.path(), &["down"]).output().unwrap();
    assert!(String::from_utf8_lossy(&down.stdout).contains("nothing started by ./lab is running"));
}

#[test]
fn down_stops_the_stack_even_when_its_supervisor_was_killed() {
    let dir = TempDir::new();
    let _cleanup = LabCleanup(dir.path());
    let out = lab(dir.path(), &["up", "--detach", "--ports", "free"]).output().expect("lab up");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let state = State::read(dir.path()).expect("state file");
    kill_group(state.supervisor, Signal::SIGKILL); // the supervisor leads its own group
    wait_until("supervisor gone", Duration::from_secs(10), || !group_alive(state.supervisor)).unwrap();
    // Its processes run on, orphaned; status still finds them by their groups.
    let rows = status(dir.path());
    assert!(rows.iter().all(|r| r["pid"].is_u64() && r["ready"] == true), "{rows:?}");
    // A new `up` here would lose track of them: it refuses.
    let again = lab(dir.path(), &["up", "--detach", "--ports", "free"]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("./lab down first"), "{again:?}");
    let down = lab(dir.path(), &["down"]).output().expect("lab down");
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    for p in state.procs {
        let g = p.pid.expect("it ran");
        assert!(!group_alive(g), "{} (group {g}) is gone", p.name);
        assert!(!port_open(p.port), "{}'s port {} is closed", p.name, p.port);
    }
}
