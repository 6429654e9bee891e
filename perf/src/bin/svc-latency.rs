//! `svc-latency`: the ack seen from inside a running stack, for `perf/run`'s report. The
//! generator times an order from its intended send time to nginx's answer; the services time
//! their own parts of it, and this reads those histograms (every gateway and order-svc of the
//! stack, summed over instances) around one load run:
//!
//! ```text
//! svc-latency --run-dir DIR --save FILE     # before the run: every gateway's and order-svc's /metrics into FILE
//! svc-latency --run-dir DIR --since FILE    # after it: what the run added, as report lines
//! ```
//!
//! Instead of `--run-dir` (a stack `lab up` started: its state file names the ports), each
//! service can be named with `--service NAME=URL` (repeatable; `NAME` starts `gateway` or
//! `order-svc`, `URL` is where its `/metrics` is served from).
//!
//! Each line of the second form starts `svc ` and gives one part of the ack — the gateway's whole
//! handling of `POST /api/v1/orders`, its call to order-svc, order-svc's wait for the broker's
//! acknowledgement — with how many requests and their p50, p90 and p99 in ms, interpolated within
//! the histogram's buckets as Prometheus' `histogram_quantile` does (so only as fine as the
//! buckets: powers of two from 50 µs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use perf::prom::{histogram, series, Buckets, PromError};

const USAGE: &str =
    "usage: svc-latency (--run-dir DIR | --service NAME=URL ...) (--save FILE | --since FILE)";

/// Label pairs a series must carry.
type Labels = &'static [(&'static str, &'static str)];

/// The parts of the ack the services time: (label, service prefix, histogram, labels).
const PARTS: [(&str, &str, &str, Labels); 3] = [
    (
        "the gateway, request in to answer out (route `/api/v1/orders`: new orders)",
        "gateway",
        "http_request_duration_seconds",
        &[("route", "/api/v1/orders")],
    ),
    (
        "the gateway's call to order-svc (new orders and cancels)",
        "gateway",
        "gateway_upstream_seconds",
        &[("pool", "order_svc")],
    ),
    (
        "order-svc's wait for the broker's acknowledgement (new orders and cancels)",
        "order-svc",
        "order_ack_seconds",
        &[],
    ),
];

/// Separates one service's scrape from the next in a saved file.
const SEPARATOR: &str = "\n# ---- svc-latency: ";

/// True for the services whose histograms the report reads.
fn measured(name: &str) -> bool {
    name.starts_with("gateway") || name.starts_with("order-svc")
}

/// Every gateway and order-svc of the stack `lab up` started in `dir`: `(name, base URL)`.
fn services_in(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let rows = stack::commands::status_rows(dir)
        .with_context(|| format!("reading the stack in {}", dir.display()))?;
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| measured(&r.process)) {
        if row.pid.is_none() {
            bail!("{} is not running in {}", row.process, dir.display());
        }
        out.push((row.process.clone(), format!("http://127.0.0.1:{}", row.port)));
    }
    Ok(out)
}

/// Each service's `/metrics`, as `(name, text)`.
fn scrape(services: &[(String, String)]) -> anyhow::Result<Vec<(String, String)>> {
    if services.is_empty() {
        bail!("no gateway or order-svc to read");
    }
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let mut out = Vec::new();
    for (name, base) in services {
        let url = format!("{}/metrics", base.trim_end_matches('/'));
        let text = client
            .get(&url)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .with_context(|| format!("scraping {name} ({url})"))?;
        out.push((name.clone(), text));
    }
    Ok(out)
}

/// Joins scrapes into one file's text.
fn save(scrapes: &[(String, String)]) -> String {
    scrapes.iter().map(|(name, text)| format!("{SEPARATOR}{name}\n{text}")).collect()
}

/// Splits a saved file back into `(name, text)`.
fn load(saved: &str) -> Vec<(String, String)> {
    saved
        .split(SEPARATOR)
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.split_once('\n').map(|(name, text)| (name.to_owned(), text.to_owned())))
        .collect()
}

/// What the run added to one part's histogram, instance by instance (each compared with its own
/// first scrape, so a restart of one is seen), summed over every instance of `prefix`. A series
/// the first scrape lacks counts from 0 (it appears with its first observation), as does one an
/// instance lacks in both; a part no instance has at the end is an error, as is a broken line.
fn part(
    before: &[(String, String)],
    after: &[(String, String)],
    prefix: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> anyhow::Result<Buckets> {
    let read = |text: &str| match histogram(text, name, labels) {
        Ok(b) => Ok(Some(b)),
        Err(PromError::Missing(_)) => Ok(None),
        Err(e) => Err(e),
    };
    let mut sum: Option<Buckets> = None;
    for (instance, text) in after.iter().filter(|(n, _)| n.starts_with(prefix)) {
        let Some(now) = read(text).with_context(|| format!("{instance}, after"))? else { continue };
        let then = match before.iter().find(|(n, _)| n == instance) {
            Some((_, text)) => read(text).with_context(|| format!("{instance}, before"))?,
            None => None,
        };
        let run = now.since(&then.unwrap_or(Buckets(Vec::new())));
        sum = Some(sum.map_or_else(|| run.clone(), |s| s.add(&run)));
    }
    sum.ok_or_else(|| anyhow::anyhow!("no {prefix} exports {}", series(name, labels)))
}

/// The report lines: each part, what the run added.
fn lines(before: &[(String, String)], after: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (label, prefix, name, labels) in PARTS {
        let run = part(before, after, prefix, name, labels)?;
        let line = match (run.quantile(0.5), run.quantile(0.9), run.quantile(0.99)) {
            (Some(p50), Some(p90), Some(p99)) => format!(
                "svc {label} ({:.0} requests): p50 {} ms, p90 {}, p99 {}",
                run.count(),
                p50.ms(),
                p90.ms(),
                p99.ms()
            ),
            _ => format!("svc {label}: no requests"),
        };
        out.push(line);
    }
    Ok(out)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return;
    }
    if let Err(e) = run(&args) {
        eprintln!("svc-latency: {e:#}\n{USAGE}");
        std::process::exit(2);
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let known = ["--run-dir", "--service", "--save", "--since"];
    if let Some(bad) = args.iter().step_by(2).find(|a| !known.contains(&a.as_str())) {
        bail!("unknown flag {bad}");
    }
    if let [.., last] = args {
        if args.len() % 2 == 1 {
            bail!("{last} needs a value");
        }
    }
    for once in ["--run-dir", "--save", "--since"] {
        if args.chunks(2).filter(|kv| kv[0] == once).count() > 1 {
            bail!("{once} given twice");
        }
    }
    let value = |name: &str| args.chunks(2).find(|kv| kv[0] == name).map(|kv| PathBuf::from(&kv[1]));
    let named = args
        .chunks(2)
        .filter(|kv| kv[0] == "--service")
        .map(|kv| match kv[1].split_once('=') {
            Some((name, url)) if measured(name) && url.starts_with("http") => {
                Ok((name.to_owned(), url.to_owned()))
            }
            _ => Err(anyhow::anyhow!("--service {}: give NAME=URL, NAME a gateway or an order-svc", kv[1])),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let services = match (value("--run-dir"), named.is_empty()) {
        (Some(dir), true) => services_in(&dir)?,
        (None, false) => named,
        _ => bail!("give either --run-dir or --service"),
    };
    match (value("--save"), value("--since")) {
        (Some(file), None) => {
            let scrapes = scrape(&services)?;
            std::fs::write(&file, save(&scrapes)).with_context(|| format!("writing {}", file.display()))?;
        }
        (None, Some(file)) => {
            let saved =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let before = load(&saved);
            if before.is_empty() {
                bail!("{} holds no scrape (make it with --save)", file.display());
            }
            for line in lines(&before, &scrape(&services)?)? {
                println!("{line}");
            }
        }
        _ => bail!("give one of --save FILE and --since FILE"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape_of(acks: u32) -> String {
        format!(
            "http_request_duration_seconds_bucket{{route=\"/api/v1/orders\",service=\"gateway\",le=\"0.001\"}} {acks}\n\
             http_request_duration_seconds_bucket{{route=\"/api/v1/orders\",service=\"gateway\",le=\"+Inf\"}} {acks}\n\
             gateway_upstream_seconds_bucket{{pool=\"order_svc\",service=\"gateway\",le=\"0.001\"}} {acks}\n\
             gateway_upstream_seconds_bucket{{pool=\"order_svc\",service=\"gateway\",le=\"+Inf\"}} {acks}\n"
        )
    }

    #[test]
    fn a_saved_file_reads_back_as_the_scrapes_it_holds() {
        let scrapes =
            vec![("gateway-1".to_owned(), scrape_of(3)), ("order-svc-1".to_owned(), "x 1\n".to_owned())];
        assert_eq!(load(&save(&scrapes)), scrapes);
        assert!(load("").is_empty());
    }

    #[test]
    fn the_lines_count_what_the_run_added_over_every_instance() {
        let ack = |n: u32| {
            format!(
                "order_ack_seconds_bucket{{le=\"0.002\"}} {n}\norder_ack_seconds_bucket{{le=\"+Inf\"}} {n}\n"
            )
        };
        let before = vec![
            ("gateway-1".to_owned(), scrape_of(10)),
            ("gateway-2".to_owned(), scrape_of(5)),
            ("order-svc-1".to_owned(), ack(15)),
        ];
        let after = vec![
            ("gateway-1".to_owned(), scrape_of(30)),
            ("gateway-2".to_owned(), scrape_of(25)),
            ("order-svc-1".to_owned(), ack(15)),
        ];
        let got = lines(&before, &after).unwrap();
        assert!(got[0].contains("(40 requests)") && got[0].contains("p50 0.50 ms"), "{got:?}");
        assert!(
            got[1].starts_with("svc the gateway's call to order-svc (new orders and cancels) (40"),
            "{got:?}"
        );
        assert_eq!(
            got[2],
            "svc order-svc's wait for the broker's acknowledgement (new orders and cancels): no requests"
        );
        // A series the first scrape lacks (no request yet) counts from zero…
        let fresh = vec![("gateway-1".to_owned(), "up 1\n".to_owned()), ("order-svc-1".to_owned(), ack(1))];
        assert!(lines(&fresh, &after).unwrap()[0].contains("(55 requests)"));
        // …but one the second lacks is an error, not a silent blank.
        assert!(lines_err(&after, &fresh).contains("http_request_duration_seconds"));
        // One gateway restarted (10 → 3) while the other grew (5 → 25): 3 + 20, not the sums' 28 − 15.
        let restarted = vec![
            ("gateway-1".to_owned(), scrape_of(3)),
            ("gateway-2".to_owned(), scrape_of(25)),
            ("order-svc-1".to_owned(), ack(15)),
        ];
        assert!(lines(&before, &restarted).unwrap()[0].contains("(23 requests)"));
        // A broken line in either scrape is an error.
        let broken = vec![("gateway-1".to_owned(), scrape_of(1).replace("0.001", "fast"))];
        assert!(lines_err(&broken, &after).contains("gateway-1, before"));
    }

    fn lines_err(before: &[(String, String)], after: &[(String, String)]) -> String {
        format!("{:#}", lines(before, after).unwrap_err())
    }
}
