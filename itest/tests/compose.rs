//! `docker-compose.yml` cannot run here (no Docker engine), so this test checks it against the
//! code: the service names and ports of DESIGN.md §1, only nginx published (on 8080), every env
//! var and flag a service is given exists in that binary's `--help`, every address points at a
//! compose service on the port that service listens on, nginx's upstreams are compose services,
//! and our services have healthchecks and conditional `depends_on`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_yaml::Value;

fn compose() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("docker-compose.yml")).expect("docker-compose.yml");
    let mut v: Value = serde_yaml::from_str(&text).expect("valid YAML");
    v.apply_merge().expect("merge keys resolve");
    v
}

/// DESIGN.md §1: our services and the ports they listen on.
fn ours() -> BTreeMap<&'static str, (&'static str, u16)> {
    BTreeMap::from([
        ("gateway-1", ("gateway", 9001)),
        ("gateway-2", ("gateway", 9002)),
        ("order-svc-1", ("order-svc", 9101)),
        ("order-svc-2", ("order-svc", 9102)),
        ("matcher", ("matcher", 9201)),
    ])
}

fn listen_port(name: &str) -> Option<u16> {
    match name {
        "kafka" => Some(9092),
        "redis" => Some(6379),
        "nginx" => Some(8080),
        other => ours().get(other).map(|(_, p)| *p),
    }
}

fn help(binary: &str) -> String {
    let path = itest::our_binary(binary);
    let out = Command::new(path).arg("--help").output().expect("run --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `host:port` inside `value` must name a compose service and the port it listens on.
fn check_addresses(service: &str, key: &str, value: &str, services: &BTreeSet<String>) {
    for part in value.split(',') {
        let hostport = part.split("://").last().unwrap_or(part).trim_end_matches('/');
        let Some((host, port)) = hostport.rsplit_once(':') else { continue };
        if host == "0.0.0.0" || host == "localhost" {
            continue;
        }
        assert!(services.contains(host), "{service}.{key}: {host} is not a compose service");
        let port: u16 = port.parse().unwrap_or_else(|_| panic!("{service}.{key}: bad port in {value}"));
        assert_eq!(Some(port), listen_port(host), "{service}.{key}: {host} listens elsewhere");
    }
}

#[test]
fn the_compose_file_agrees_with_the_code() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect();
    let want: BTreeSet<String> = ["kafka", "kafka-init", "redis", "nginx"]
        .into_iter()
        .chain(ours().keys().copied())
        .map(str::to_owned)
        .collect();
    assert_eq!(names, want);
    assert!(c["services"]["kafka"]["image"].as_str().is_some_and(|i| i.starts_with("apache/kafka")));

    for name in &names {
        let s = &c["services"][name.as_str()];
        let published = s.get("ports").and_then(Value::as_sequence).map(Vec::len).unwrap_or(0);
        if name == "nginx" {
            assert_eq!(s["ports"][0].as_str(), Some("8080:8080"), "nginx is published on host port 8080");
        } else {
            assert_eq!(published, 0, "{name} must not publish a port: only nginx does");
        }
    }

    for (name, (binary, port)) in ours() {
        let s = &c["services"][name];
        assert_eq!(s["command"][0].as_str(), Some(binary), "{name} runs {binary}");
        let usage = help(binary);
        for flag in s["command"].as_sequence().unwrap().iter().skip(1).filter_map(Value::as_str) {
            if flag.starts_with("--") {
                let flag = flag.split('=').next().unwrap();
                assert!(usage.contains(flag), "{name}: {binary} has no flag {flag}");
            }
        }
        let env = s["environment"].as_mapping().expect("environment");
        for (k, v) in env {
            let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap_or_default());
            assert!(usage.contains(&format!("env: {k}=")), "{name}: {binary} reads no env var {k}");
            check_addresses(name, k, v, &names);
            if k.ends_with("_LISTEN") {
                assert_eq!(v, format!("0.0.0.0:{port}"), "{name} listens on its DESIGN.md port");
            }
        }
        assert!(s["healthcheck"]["test"].is_sequence(), "{name} has a healthcheck");
        let deps = s["depends_on"].as_mapping().expect("depends_on");
        for (dep, cond) in deps {
            assert!(names.contains(dep.as_str().unwrap()), "{name} depends on a missing service");
            assert!(cond["condition"].as_str().is_some(), "{name} waits on a condition");
        }
    }

    // nginx: the template's upstreams, filled in with compose services on their ports.
    let entry = c["services"]["nginx"]["entrypoint"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect::<String>();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let template = std::fs::read_to_string(root.join("nginx/nginx.conf.template")).unwrap();
    for placeholder in ["@RUN@", "@LISTEN@", "@GATEWAY_1@", "@GATEWAY_2@", "@MATCHER@", "@FRONTEND@"] {
        assert!(template.contains(placeholder), "the template uses {placeholder}");
        let filled = entry.split(&format!("s|{placeholder}|")).nth(1).and_then(|r| r.split('|').next());
        let filled = filled.unwrap_or_else(|| panic!("compose's nginx fills in {placeholder}"));
        if placeholder.starts_with("@GATEWAY") || placeholder == "@MATCHER@" {
            check_addresses("nginx", placeholder, filled, &names);
        }
    }
    assert!(
        entry.contains("s|@GATEWAY_1@|gateway-1:9001|") && entry.contains("s|@GATEWAY_2@|gateway-2:9002|")
    );
}

#[test]
fn the_check_can_fail() {
    // A compose file whose gateway points at a service that does not exist is caught.
    let names: BTreeSet<String> = ["matcher".to_owned()].into();
    let caught = std::panic::catch_unwind(|| {
        check_addresses("gateway-1", "MATCHER_URL", "http://matchr:9201", &names)
    });
    assert!(caught.is_err());
    let caught = std::panic::catch_unwind(|| {
        check_addresses("gateway-1", "MATCHER_URL", "http://matcher:9999", &names)
    });
    assert!(caught.is_err());
}
