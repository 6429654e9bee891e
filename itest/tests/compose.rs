//! `docker-compose.yml` cannot run here (no Docker engine), so this test checks it against the
//! one description of the stack, the `stack` crate's fixed plan (what `./lab up` runs): the same
//! processes under the same names; our services run the plan's binaries with the plan's flags (as
//! the env vars those binaries read for them, per their `--help`), pointing at the same services
//! on the ports they listen on in compose; the same dependencies; the same topics; nginx from
//! the same template with every placeholder filled; only nginx published, on the plan's port; the
//! gateways' token secret a compose secret where the plan has a file.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_yaml::Value;
use stack::{Kind, Options, Plan, Ports, Proc};

fn compose() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("docker-compose.yml")).expect("docker-compose.yml");
    let mut v: Value = serde_yaml::from_str(&text).expect("valid YAML");
    v.apply_merge().expect("merge keys resolve");
    v
}

/// The fixed plan with everything in it (compose always runs Prometheus).
fn plan() -> Plan {
    let mut o = Options::native("/run", Ports::Fixed);
    o.prometheus = true;
    Plan::build(&o).expect("the fixed plan")
}

/// A plan process's compose service: the broker is `kafka` (the official image), the rest keep
/// their names.
fn compose_name(p: &Proc) -> String {
    match p.kind {
        Kind::Broker => "kafka".into(),
        _ => p.name.clone(),
    }
}

/// The port a plan process listens on inside compose's network: the images' own ports for the
/// broker and Redis, the plan's port for ours and nginx.
fn compose_port(p: &Proc) -> u16 {
    match p.kind {
        Kind::Broker => 9092,
        Kind::Redis => 6379,
        _ => p.port,
    }
}

/// The plan's value with every `127.0.0.1:<port>` of a plan process turned into that process's
/// compose `service:port`.
fn in_compose(plan: &Plan, value: &str) -> String {
    plan.procs.iter().fold(value.to_owned(), |v, p| {
        v.replace(&p.address(), &format!("{}:{}", compose_name(p), compose_port(p)))
    })
}

fn help(binary: &str) -> String {
    let out = Command::new(itest::our_binary(binary)).arg("--help").output().expect("run --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The env var a binary reads for `flag`, from its `--help` (clap prints `[env: NAME=]` after
/// each option's text).
fn env_of(usage: &str, flag: &str) -> Option<String> {
    let at = usage.find(&format!("{flag} <"))?;
    let rest = &usage[at..];
    let env = rest.find("[env: ")?;
    // The next option's text must not come first.
    let next = rest[2..].find("\n  -").map_or(usize::MAX, |n| n + 2);
    (env < next).then(|| rest[env + 6..].split('=').next().unwrap_or_default().to_owned())
}

/// Checks one of our services: every flag the plan gives it is in compose as the env var that
/// binary reads for it, with the same value translated to compose's names and ports.
fn check_service(plan: &Plan, p: &Proc, s: &Value, usage: &str) {
    let name = &p.name;
    let binary = p.program.file_name().unwrap().to_str().unwrap();
    assert_eq!(s["command"][0].as_str(), Some(binary), "{name} runs {binary}");
    let env = s["environment"].as_mapping().unwrap_or_else(|| panic!("{name} has an environment"));
    let get = |k: &str| env.get(Value::from(k)).and_then(Value::as_str).map(str::to_owned);
    for pair in p.args.chunks(2) {
        let (flag, value) = (&pair[0], &pair[1]);
        let var =
            env_of(usage, flag).unwrap_or_else(|| panic!("{binary} --help names no env var for {flag}"));
        let want = match flag.as_str() {
            // Wake-ups arrive on the HTTP port's number, over UDP.
            "--listen" | "--wake-listen" => format!("0.0.0.0:{}", p.port),
            // Natively in the run directory; in compose, on a named volume.
            "--snapshot-dir" => {
                let volumes =
                    s["volumes"].as_sequence().map(|v| v.iter().filter_map(Value::as_str).collect());
                assert_eq!(volumes, Some(vec!["matcher-snapshots:/data"]), "{name} keeps its snapshots");
                "/data/snapshots".to_owned()
            }
            // Natively a file in the run directory; in compose, a compose secret.
            "--jwt-secret-file" | "--password-file" => {
                let secret = if flag == "--jwt-secret-file" { "jwt" } else { "sim" };
                let secrets =
                    s["secrets"].as_sequence().map(|v| v.iter().filter_map(Value::as_str).collect());
                assert_eq!(secrets, Some(vec![secret]), "{name} mounts the {secret} secret");
                format!("/run/secrets/{secret}")
            }
            _ => in_compose(plan, value),
        };
        assert_eq!(get(&var), Some(want), "{name}: {var} (the plan's {flag} {value})");
    }
    for (k, _) in env {
        let k = k.as_str().unwrap();
        assert!(usage.contains(&format!("env: {k}=")), "{name}: {binary} reads no env var {k}");
    }
}

#[test]
fn the_compose_file_agrees_with_the_stack_crate() {
    let (c, plan) = (compose(), plan());
    let services = c["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect();
    let mut want: BTreeSet<String> = plan.procs.iter().map(compose_name).collect();
    want.insert("kafka-init".into());
    want.extend(["frontend-build".into(), "grafana".into()]);
    assert_eq!(
        names, want,
        "compose's services are the plan's processes (and kafka-init, frontend-build, grafana)"
    );
    assert!(c["services"]["kafka"]["image"].as_str().is_some_and(|i| i.starts_with("apache/kafka")));

    let nginx = plan.get("nginx").expect("nginx in the plan");
    for name in &names {
        let s = &c["services"][name.as_str()];
        let published = s.get("ports").and_then(Value::as_sequence).map(Vec::len).unwrap_or(0);
        if name == "nginx" {
            let port = format!("{0}:{0}", nginx.port);
            assert_eq!(s["ports"][0].as_str(), Some(port.as_str()), "nginx is published on {port}");
        } else if name == "grafana" {
            assert_eq!(
                s["ports"][0].as_str(),
                Some("127.0.0.1:3000:3000"),
                "Grafana on the host's loopback only"
            );
        } else {
            assert_eq!(
                published, 0,
                "{name} must not publish a port: only nginx (and Grafana, on loopback) do"
            );
        }
    }

    for p in &plan.procs {
        let s = &c["services"][compose_name(p).as_str()];
        // The same dependencies (compose waits for kafka-init, which waits for the broker).
        if p.kind != Kind::Broker {
            let deps: BTreeSet<String> = s["depends_on"]
                .as_mapping()
                .map(|m| {
                    let deps = m.keys().filter_map(Value::as_str).filter(|d| *d != "frontend-build");
                    deps.map(|d| d.replace("kafka-init", "kafka")).collect()
                })
                .unwrap_or_default();
            let want: BTreeSet<String> = p.deps.iter().map(|d| compose_name(plan.get(d).unwrap())).collect();
            assert_eq!(deps, want, "{} depends on what the plan says", p.name);
            for (dep, cond) in s["depends_on"].as_mapping().into_iter().flatten() {
                assert!(cond["condition"].as_str().is_some(), "{}: waits on a condition for {dep:?}", p.name);
            }
        }
        assert!(
            s["healthcheck"]["test"].is_sequence() || p.kind == Kind::Broker,
            "{} has a healthcheck",
            p.name
        );
        if matches!(p.kind, Kind::Matcher | Kind::OrderSvc | Kind::Gateway | Kind::Sim) {
            let binary = p.program.file_name().unwrap().to_str().unwrap();
            check_service(&plan, p, s, &help(binary));
        }
    }

    assert_eq!(
        c["secrets"]["jwt"]["environment"].as_str(),
        Some("JWT_SECRET"),
        "the secret comes from JWT_SECRET"
    );
    assert_eq!(c["secrets"]["sim"]["environment"].as_str(), Some("SIM_PASSWORD"), "the sim's password");

    // Prometheus scrapes the plan's services at their compose addresses.
    let prometheus = &c["services"]["prometheus"];
    let mounts: Vec<&str> =
        prometheus["volumes"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(mounts.contains(&"./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"), "{mounts:?}");
    let targets: Vec<(String, String)> =
        plan.scraped().iter().map(|p| (p.name.clone(), in_compose(&plan, &p.address()))).collect();
    let config = std::fs::read_to_string(plan.root.join("prometheus/prometheus.yml")).unwrap();
    assert_eq!(
        config,
        stack::plan::prometheus_config(&targets),
        "prometheus/prometheus.yml is the plan's, in compose terms"
    );
    assert_eq!(
        c["services"]["grafana"]["depends_on"]["prometheus"]["condition"].as_str(),
        Some("service_healthy")
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(plan.root.join("grafana/dashboards/trading-lab.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 6), "the dashboard has its panels");

    // The topics, as kafka-init creates them.
    let init = c["services"]["kafka-init"]["entrypoint"].as_sequence().unwrap();
    let script = init.iter().filter_map(Value::as_str).collect::<String>();
    let topics: Vec<String> = stack::plan::TOPICS.iter().map(|(t, n)| format!("{t}:{n}")).collect();
    assert!(script.contains(&format!("for t in {};", topics.join(" "))), "kafka-init creates {topics:?}");

    // nginx: the template's placeholders, each filled in with the compose service the plan fills
    // it with natively.
    let entry = c["services"]["nginx"]["entrypoint"].as_sequence().unwrap();
    let entry = entry.iter().filter_map(Value::as_str).collect::<String>();
    let template = std::fs::read_to_string(plan.root.join("nginx/nginx.conf.template")).unwrap();
    let gateways: Vec<&Proc> = plan.procs.iter().filter(|p| p.kind == Kind::Gateway).collect();
    for placeholder in stack::plan::NGINX_PLACEHOLDERS {
        assert!(template.contains(placeholder), "the template uses {placeholder}");
        let filled = entry.split(&format!("s|{placeholder}|")).nth(1).and_then(|r| r.split('|').next());
        let filled = filled.unwrap_or_else(|| panic!("compose's nginx fills in {placeholder}"));
        let native = match placeholder {
            "@GATEWAY_1@" => Some(gateways[0].address()),
            "@GATEWAY_2@" => Some(gateways[1].address()),
            "@MATCHER@" => plan.get("matcher").map(Proc::address),
            "@LISTEN@" => Some(nginx.port.to_string()),
            _ => None,
        };
        if let Some(native) = native {
            assert_eq!(filled, in_compose(&plan, &native), "{placeholder}");
        }
    }
}

#[test]
fn the_check_can_fail() {
    let plan = plan();
    // The gateway's --matcher in compose's terms, and what a typo would look like.
    assert_eq!(in_compose(&plan, "http://127.0.0.1:9201"), "http://matcher:9201");
    assert_ne!(in_compose(&plan, "http://127.0.0.1:9201"), "http://matchr:9201");
    let usage = "  --brokers <BROKERS>\n      Kafka\n      [env: KAFKA_BROKERS=]\n  --redis <R>\n      [env: REDIS_URL=]\n";
    assert_eq!(env_of(usage, "--brokers").as_deref(), Some("KAFKA_BROKERS"));
    assert_eq!(env_of(usage, "--nope"), None);
    // A compose matcher pointing at the wrong Redis port is caught.
    let matcher = plan.get("matcher").unwrap();
    let mut bad: Value = serde_yaml::from_str(
        "command: [matcher]\nenvironment:\n  MATCHER_LISTEN: 0.0.0.0:9201\n  MATCHER_INSTANCE: matcher\n  KAFKA_BROKERS: kafka:9092\n  REDIS_URL: redis://redis:6380\n",
    )
    .unwrap();
    bad.apply_merge().unwrap();
    let usage = help("matcher");
    let caught = std::panic::catch_unwind(|| check_service(&plan, matcher, &bad, &usage));
    assert!(caught.is_err(), "a wrong port is caught");
}
