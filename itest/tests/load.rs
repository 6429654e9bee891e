//! A smoke run of the measuring tools on the real stack, no timing asserted: `load-gen` sends a
//! short open-loop flow through nginx and reports its table, order → trade (on the WebSocket
//! feed, and on the `trades` topic), where each order's time went hop by hop, its own CPU, and
//! `.hgrm` files; `perf-plot` draws them; `svc-latency` reads what the run added to the services'
//! own histograms. (The numbers are `./lab perf`'s business.) And `perf/run` itself, short, on a
//! stack `lab up` started: the report it writes, and the running stack it leaves running.

use std::path::Path;
use std::process::{Command, Stdio};

use itest::{lab, our_binary, LabCleanup, Stack, TempDir};

#[test]
fn load_gen_and_perf_plot_run_end_to_end() {
    let s = Stack::start(2, 2, true);
    let out_dir = TempDir::new();
    let url = s.svc("nginx").url("");
    let run = |rate: &str, trades: &[&str]| {
        let out = Command::new(our_binary("load-gen"))
            .args(["--url", &url, "--rate", rate, "--duration", "2", "--warmup", "1", "--users", "2"])
            .args(trades)
            .arg("--hgrm")
            .arg(out_dir.path())
            .output()
            .expect("load-gen runs");
        let (table, log) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "load-gen at {rate}/s failed:\n{table}\n{log}");
        (table, log)
    };
    let kafka = ["--trades", "kafka", "--brokers", &s.kafka()];
    // The services' histograms around the first run (`perf/run` does this around each rate).
    let services: Vec<String> = ["gateway-1", "gateway-2", "order-svc-1", "order-svc-2"]
        .iter()
        .map(|n| format!("{n}={}", s.svc(n).url("")))
        .collect();
    let svc_latency = |args: &[&str]| {
        let out = Command::new(our_binary("svc-latency"))
            .args(services.iter().flat_map(|x| ["--service", x.as_str()]))
            .args(args)
            .output()
            .expect("svc-latency runs");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let before = out_dir.path().join("metrics.before");
    let before_arg = before.to_str().expect("a UTF-8 path");
    let (code, _, err) = svc_latency(&["--save", before_arg]);
    assert_eq!(code, Some(0), "{err}");
    for (rate, trades, seen_on) in
        [("20", &[][..], "the WebSocket feed"), ("40", &kafka[..], "the trades topic")]
    {
        let (table, log) = run(rate, trades);
        let row = table.lines().last().unwrap_or_default();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells.get(1), Some(&rate), "the row is for {rate}/s: {table}");
        assert!(
            cells.get(2).and_then(|c| c.parse::<f64>().ok()).is_some_and(|r| r > 0.0),
            "achieved: {table}"
        );
        // Takers matched to their trades by id: some of them traded (makers rest on both sides).
        let traded = table
            .lines()
            .find_map(|l| l.strip_prefix(&format!("order → trade on {seen_on} (")))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok());
        assert!(traded.is_some_and(|n| n > 0), "order → trade on {seen_on}, takers matched:\n{table}\n{log}");
        assert!(log.contains("users logged in"), "{log}");
        assert!(
            table.lines().any(|l| l.starts_with("generator: ") && l.contains("% of one core")),
            "{table}"
        );
        if rate == "20" {
            // Every part of the ack the services time saw this run's orders.
            let (code, text, err) = svc_latency(&["--since", before_arg]);
            assert_eq!(code, Some(0), "{err}");
            let parts: Vec<&str> = text.lines().filter(|l| l.starts_with("svc ")).collect();
            assert_eq!(parts.len(), 3, "{text}");
            for part in parts {
                // "… (N requests): p50 …"
                let n =
                    part.split(" requests)").next().and_then(|h| h.rsplit('(').next()?.parse::<u64>().ok());
                assert!(n.is_some_and(|n| n > 0) && part.contains("p99 "), "{part}");
            }
        }
        // Where the time went: the four hops of a sample of the accepted orders, each measured.
        let hops: Vec<&str> = table.lines().filter(|l| l.starts_with("hop ")).collect();
        assert_eq!(hops.len(), 4, "{table}");
        assert!(hops.iter().all(|h| !h.contains("(0 orders)")), "every hop measured: {hops:?}");
        for file in [format!("ack-{rate}.hgrm"), format!("trade-{rate}.hgrm"), format!("hops-{rate}.tsv")] {
            assert!(out_dir.path().join(&file).is_file(), "{file} written");
        }
    }
    let plot = Command::new(our_binary("perf-plot")).arg(out_dir.path()).output().expect("perf-plot runs");
    assert!(plot.status.success(), "{}", String::from_utf8_lossy(&plot.stderr));
    for svg in ["spectrum-ack.svg", "spectrum-trade.svg", "latency-vs-rate.svg", "hops.svg"] {
        let text = std::fs::read_to_string(out_dir.path().join(svg)).unwrap_or_default();
        assert!(
            text.starts_with("<svg") && (text.contains("polyline") || text.contains("<rect")),
            "{svg} is a plot: {}",
            &text[..text.len().min(200)]
        );
    }
    // Bad input is refused with a reason: a service that is not measured, a file that holds no scrape.
    let refused = Command::new(our_binary("svc-latency"))
        .args(["--service", &format!("redis={}", s.svc("redis").url("")), "--save", before_arg])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("NAME a gateway or an order-svc"));
    let empty_file = out_dir.path().join("empty.before");
    std::fs::write(&empty_file, "").unwrap();
    let (code, _, err) = svc_latency(&["--since", empty_file.to_str().unwrap()]);
    assert!(code == Some(2) && err.contains("holds no scrape"), "{err}");
    // A directory without histograms is an error that says so.
    let empty = TempDir::new();
    let plot = Command::new(our_binary("perf-plot")).arg(empty.path()).output().unwrap();
    assert!(!plot.status.success() && String::from_utf8_lossy(&plot.stderr).contains("no ack-"));
}

/// `perf/run <args>` with this build's binaries.
fn perf_run(args: &[&str]) -> (Option<i32>, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository");
    let bins = our_binary("lab").parent().expect("the binaries' directory").to_path_buf();
    let out = Command::new("bash")
        .arg(root.join("perf/run"))
        .args(args)
        .env("PERF_BINARIES", bins)
        .stdin(Stdio::null())
        .output()
        .expect("perf/run runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn perf_run_measures_a_running_stack_and_leaves_it_running() {
    let run_dir = TempDir::new();
    let _cleanup = LabCleanup(run_dir.path());
    let up =
        lab(run_dir.path(), &["up", "--detach", "--no-sim", "--ports", "free"]).output().expect("lab runs");
    assert!(up.status.success(), "lab up: {}", String::from_utf8_lossy(&up.stderr));
    let results = TempDir::new();
    let stack_arg = run_dir.path().to_str().expect("a UTF-8 path");
    let results_arg = results.path().to_str().expect("a UTF-8 path");
    let (code, shown, err) = perf_run(&[
        "--stack",
        stack_arg,
        "--results",
        results_arg,
        "--rates",
        "20 40",
        "--duration",
        "3",
        "--warmup",
        "1",
        "--rest",
        "0",
    ]);
    assert_eq!(code, Some(0), "perf/run failed:\n{shown}\n{err}");
    assert!(shown.contains("measuring the running stack"), "{shown}");
    let dirs: Vec<_> = std::fs::read_dir(results.path()).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 1, "one report directory under --results");
    let report = std::fs::read_to_string(dirs[0].path().join("report.md")).expect("report.md written");
    assert!(report.contains(&format!("- stack: already running (`--stack {stack_arg}`)")), "{report}");
    for rate in ["20", "40"] {
        let row = report.lines().find(|l| l.starts_with(&format!("| {rate} | "))).unwrap_or_else(|| {
            panic!("a row for {rate}/s in:\n{report}");
        });
        assert!(row.ends_with("| 0 |"), "no errors at {rate}/s: {row}");
    }
    assert!(report.contains("- capacity (highest rate with p99 ack ≤ 10 ms and no errors): "), "{report}");
    assert!(!report.contains("lab up --detach"), "it did not start the stack: {report}");
    // perf/run neither started nor stopped it: it still runs.
    let status = lab(run_dir.path(), &["status", "--json"]).output().expect("lab runs");
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).expect("lab status --json");
    let nginx = rows.as_array().unwrap().iter().find(|r| r["process"] == "nginx").expect("nginx");
    assert_eq!(nginx["ready"], true, "still up after perf/run: {rows}");

    // A stack that is not running, or no stack at all, is refused before anything is measured.
    let down = lab(run_dir.path(), &["down"]).output().expect("lab runs");
    assert!(down.status.success());
    let (code, _, err) = perf_run(&["--stack", stack_arg, "--results", results_arg]);
    assert!(code == Some(1) && err.contains("its nginx is not up"), "{err}");
    let empty = TempDir::new();
    let (code, _, err) = perf_run(&["--stack", empty.path().to_str().unwrap(), "--results", results_arg]);
    assert!(code == Some(1) && err.contains("no stack.json there"), "{err}");
    let (code, _, err) = perf_run(&["--stack"]);
    assert!(code == Some(1) && err.contains("--stack needs the run directory"), "{err}");
    assert_eq!(std::fs::read_dir(results.path()).unwrap().count(), 1, "a refused run writes no report");
}
