//! The one description of the native stack (DESIGN.md §1): every process, its command line, how
//! to tell it is alive and ready, what it waits for, and its port. `./lab up` builds a [`Plan`]
//! with the fixed ports of DESIGN.md §1; the integration tests build one on free loopback ports;
//! the compose test reads the fixed plan to check `docker-compose.yml`.
//!
//! A process added to the stack later (a market maker, Prometheus, a second matcher) is one more
//! [`Kind`] and one more entry in [`Plan::build`]; nothing else describes the stack.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The topics the stack needs, with their partition counts; created by the supervisor (the broker
/// does not auto-create) and, in compose, by `kafka-init`. The output topics are partitioned like
/// `orders`: partition *i* of each holds the events of `orders` partition *i*'s commands.
pub const TOPICS: [(&str, i32); 3] = [("orders", 2), ("trades", 2), ("order-events", 2)];

/// The kinds of process in the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The Kafka-protocol broker (Tansu natively).
    Broker,
    /// Redis.
    Redis,
    /// The matching engine and its read front.
    Matcher,
    /// Order entry.
    OrderSvc,
    /// An API gateway.
    Gateway,
    /// nginx, the public entry.
    Nginx,
    /// The simulated market maker (`market-sim`): quotes through nginx like any client.
    Sim,
    /// Prometheus, scraping every service's `/metrics`.
    Prometheus,
}

/// How the supervisor tells that a process has got somewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Something accepts TCP connections on the process's port.
    Tcp,
    /// `GET <path>` on the process's port answers 2xx.
    Http(String),
}

/// One process of the stack.
#[derive(Clone, Debug)]
pub struct Proc {
    /// Its name: the log file, the status table, `lab logs <name>`, compose's service name.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment (on top of the supervisor's own).
    pub env: Vec<(String, String)>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Alive: it started and answers (a restart waits for this).
    pub live: Probe,
    /// Ready: dependents may start (`/readyz`: its own dependencies answer, the matcher caught up).
    pub ready: Probe,
    /// Processes that must be ready before this one starts.
    pub deps: Vec<String>,
    /// How long it may take to get ready (the matcher replays the whole log first).
    pub ready_timeout: Duration,
    /// How long it gets between SIGTERM and SIGKILL (the matcher drains, bounded at 10 s).
    pub stop_grace: Duration,
}

impl Proc {
    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The command line, for logs.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The value given to a `--flag`, if any.
    pub fn flag(&self, flag: &str) -> Option<&str> {
        self.args.iter().position(|a| a == flag).and_then(|i| self.args.get(i + 1)).map(String::as_str)
    }
}

/// Where ports come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ports {
    /// DESIGN.md §1: nginx 8080, gateways 9001…, order-svc 9101…, matcher 9201, broker 19092,
    /// Redis 16379.
    Fixed,
    /// Free loopback ports, picked when the plan is built (tests, and stacks beside a running one).
    Free,
}

impl Ports {
    fn pick(self, fixed: u16) -> u16 {
        match self {
            Ports::Fixed => fixed,
            Ports::Free => free_port(),
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the process binds it seconds later).
///
/// Not the kernel's `bind(0)`: that hands out ports from the ephemeral range, where every client
/// socket of every test (HTTP, Kafka) also takes its source port, and two stacks starting at once
/// were handed the same port. These come from 20000–32767, below Linux's ephemeral range
/// (32768+) and clear of the fixed plan's ports, each process walking the range from its own
/// pid-derived start, each port checked free before it is handed out.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// What to run and where: the knobs of a [`Plan`].
#[derive(Clone, Debug)]
pub struct Options {
    /// The run directory: logs, the broker's and Redis's data, nginx's config, the state file.
    pub dir: PathBuf,
    /// Where ports come from.
    pub ports: Ports,
    /// Where our binaries (`matcher`, `order-svc`, `gateway`) are.
    pub bin_dir: PathBuf,
    /// The Tansu binary.
    pub tansu: PathBuf,
    /// The nginx binary.
    pub nginx: PathBuf,
    /// The repository root (nginx's template and the frontend).
    pub root: PathBuf,
    /// An existing broker to use instead of starting one (`KAFKA_BROKERS`).
    pub kafka: Option<String>,
    /// An existing Redis to use instead of starting one (`REDIS_URL`).
    pub redis: Option<String>,
    /// Run the matcher (the order-svc-only tests don't).
    pub matcher: bool,
    /// How many matchers: with more than one, they share the `orders` partitions
    /// (`--share-partitions`) and take over a dead one's. The first is `matcher`, the others
    /// `matcher-2`, …; the gateways and nginx read from the first.
    pub matchers: usize,
    /// How many order-svc instances.
    pub order_svcs: usize,
    /// How many gateways.
    pub gateways: usize,
    /// Put nginx in front (needs two gateways).
    pub nginx_front: bool,
    /// Redis persists to disk (`lab up`: yes; tests: no).
    pub durable_redis: bool,
    /// The one other origin allowed to call the API from a browser (`CORS_ORIGIN`; default:
    /// nginx's own, i.e. no other).
    pub cors_origin: Option<String>,
    /// Accounts on: the gateways need a token (`false`: `--no-auth`, development).
    pub auth: bool,
    /// Run the simulated market maker (`lab up`: unless `--no-sim`; tests: no). Needs nginx and
    /// accounts.
    pub sim: bool,
    /// Run Prometheus, scraping every service (`lab up --with-prometheus`; tests: only the one
    /// about it). Off by default: a stack at rest should leave the machine idle.
    pub prometheus: bool,
}

impl Options {
    /// The whole stack of DESIGN.md §1 in `dir`: broker, Redis, matcher, two order-svc, two
    /// gateways, nginx; the binaries beside the running executable; Tansu and nginx where
    /// [`tansu_binary`] and [`nginx_binary`] find them.
    pub fn native(dir: impl Into<PathBuf>, ports: Ports) -> Options {
        Options {
            dir: dir.into(),
            ports,
            bin_dir: own_bin_dir(),
            tansu: tansu_binary(),
            nginx: nginx_binary(),
            root: repo_root(),
            kafka: None,
            redis: None,
            matcher: true,
            matchers: 1,
            order_svcs: 2,
            gateways: 2,
            nginx_front: true,
            durable_redis: true,
            cors_origin: None,
            auth: true,
            sim: true,
            prometheus: false,
        }
    }
}

/// The stack to run: processes in dependency order.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The run directory.
    pub dir: PathBuf,
    /// Every process, each after what it depends on.
    pub procs: Vec<Proc>,
    /// The broker's `host:port` (ours or the existing one).
    pub kafka: String,
    /// Redis's URL (ours or the existing one).
    pub redis: String,
    /// The repository root.
    pub root: PathBuf,
    /// The one other origin allowed to call the API from a browser (`None`: nginx's own).
    pub cors_origin: Option<String>,
}

/// DESIGN.md §1's fixed ports.
pub mod fixed {
    /// nginx, the public entry.
    pub const NGINX: u16 = 8080;
    /// gateway *i* (1-based) listens on `GATEWAY + i - 1`.
    pub const GATEWAY: u16 = 9001;
    /// order-svc *i* on `ORDER_SVC + i - 1`.
    pub const ORDER_SVC: u16 = 9101;
    /// The matcher's read front.
    pub const MATCHER: u16 = 9201;
    /// The broker.
    pub const BROKER: u16 = 19092;
    /// Redis.
    pub const REDIS: u16 = 16379;
    /// The simulated market maker's health and metrics.
    pub const SIM: u16 = 9301;
    /// Prometheus.
    pub const PROMETHEUS: u16 = 9090;
}

impl Plan {
    /// The plan for `o`.
    pub fn build(o: &Options) -> anyhow::Result<Plan> {
        anyhow::ensure!(!o.nginx_front || o.gateways == 2, "nginx's template has two gateways");
        anyhow::ensure!(
            o.gateways == 0 || (o.matcher && o.order_svcs > 0),
            "gateways need the matcher and order-svc"
        );
        let mut procs = Vec::new();
        let common =
            |name: String, kind, program: PathBuf, args: Vec<String>, port, deps: Vec<String>| Proc {
                name,
                kind,
                program,
                args,
                env: Vec::new(),
                port,
                live: Probe::Tcp,
                ready: Probe::Tcp,
                deps,
                ready_timeout: Duration::from_secs(30),
                stop_grace: Duration::from_secs(5),
            };
        let kafka = match &o.kafka {
            Some(k) => k.clone(),
            None => {
                let port = o.ports.pick(fixed::BROKER);
                let mut broker =
                    common("broker".into(), Kind::Broker, o.tansu.clone(), tansu_args(port), port, vec![]);
                // Tansu at `info` traces every fetch: ~70 MB/s of log with consumers polling every
                // few ms. Warnings only, unless TANSU_LOG asks for more.
                let level = std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into());
                broker.env.push(("RUST_LOG".into(), level));
                // One runtime thread: on two cores shared with the whole stack, order → trade
                // p50 9.9 → 7.0 ms at 1,000 orders/s and the broker 69 → 65 % of a core, level at
                // 2,000/s (README, "The broker's statements").
                broker.env.push(("TOKIO_WORKER_THREADS".into(), "1".into()));
                procs.push(broker);
                format!("127.0.0.1:{port}")
            }
        };
        let redis = match &o.redis {
            Some(r) => r.clone(),
            None => {
                let port = o.ports.pick(fixed::REDIS);
                let args = redis_args(port, o.durable_redis, &o.dir);
                procs.push(common("redis".into(), Kind::Redis, "redis-server".into(), args, port, vec![]));
                format!("redis://127.0.0.1:{port}")
            }
        };
        // Against a broker that holds every fetch for the consumer's whole wait (stock Tansu), the
        // consumers wait a few milliseconds, not the default that a broker answering on a write
        // can afford (`common::kafka::FETCH_WAIT_MS`).
        let fetch_wait = |short: u32| -> Vec<String> {
            if o.kafka.is_none() && holds_every_fetch(&o.tansu) {
                vec!["--kafka-fetch-wait-ms".into(), short.to_string()]
            } else {
                vec![]
            }
        };
        let broker_dep: Vec<String> =
            procs.iter().filter(|p| p.kind == Kind::Broker).map(|p| p.name.clone()).collect();
        let backends: Vec<String> = procs.iter().map(|p| p.name.clone()).collect();
        let service =
            |name: &str, kind, binary: &str, port: u16, mut args: Vec<String>, deps: Vec<String>| {
                let mut all = vec![
                    "--listen".to_owned(),
                    format!("127.0.0.1:{port}"),
                    "--instance".into(),
                    name.to_owned(),
                ];
                all.append(&mut args);
                let mut p = common(name.to_owned(), kind, o.bin_dir.join(binary), all, port, deps);
                p.live = Probe::Http("/healthz".into());
                p.ready = Probe::Http("/readyz".into());
                p
            };
        // Ports of what starts later, so that the matcher can wake the gateways and the gateways
        // can watch everything (the system map).
        let gateway_ports: Vec<u16> =
            (1..=o.gateways).map(|i| o.ports.pick(fixed::GATEWAY + i as u16 - 1)).collect();
        let mut matcher_url = None;
        // Wake-ups (`common::wake`) go to a service's HTTP port number, over UDP.
        let mut matcher_wake = None;
        for i in (1..=o.matchers.max(1)).filter(|_| o.matcher) {
            let name = if i == 1 { "matcher".to_owned() } else { format!("matcher-{i}") };
            let port = o.ports.pick(fixed::MATCHER + i as u16 - 1);
            let gateways: Vec<String> = gateway_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            let mut args = vec!["--brokers".into(), kafka.clone(), "--redis".into(), redis.clone()];
            if o.matchers > 1 {
                // One consumer group: each owns a share of the partitions, rebuilds only those
                // books, and takes over a dead one's after the rebalance.
                args.push("--share-partitions".into());
            }
            args.extend(["--wake-listen".into(), format!("127.0.0.1:{port}")]);
            args.extend(fetch_wait(2));
            // Book snapshots bound the replay on a restart (in the run directory, with the log).
            args.extend(["--snapshot-dir".into(), o.dir.join("snapshots").display().to_string()]);
            if !gateways.is_empty() {
                args.extend(["--wake".into(), gateways.join(",")]);
            }
            if i == 1 {
                matcher_wake = Some(format!("127.0.0.1:{port}"));
            }
            let mut m = service(&name, Kind::Matcher, "matcher", port, args, backends.clone());
            // It replays the orders log (from its newest snapshot) before it is ready; its drain
            // is bounded at 10 s.
            m.ready_timeout = Duration::from_secs(600);
            m.stop_grace = Duration::from_secs(15);
            if i == 1 {
                matcher_url = Some(m.url(""));
            }
            procs.push(m);
        }
        let mut order_urls = Vec::new();
        let mut order_names = Vec::new();
        for i in 1..=o.order_svcs {
            let name = format!("order-svc-{i}");
            let port = o.ports.pick(fixed::ORDER_SVC + i as u16 - 1);
            let mut args = vec!["--brokers".into(), kafka.clone()];
            if let Some(wake) = &matcher_wake {
                args.extend(["--wake".into(), wake.clone()]);
            }
            let p = service(&name, Kind::OrderSvc, "order-svc", port, args, broker_dep.clone());
            order_urls.push(p.url(""));
            order_names.push(name);
            procs.push(p);
        }
        let nginx_port = o.nginx_front.then(|| o.ports.pick(fixed::NGINX));
        let sim_port = (o.sim && o.auth).then_some(nginx_port).flatten().map(|_| o.ports.pick(fixed::SIM));
        let mut watch: Vec<String> = procs
            .iter()
            .map(|p| match p.kind {
                Kind::Broker => format!("{}=tcp://{}", p.name, p.address()),
                Kind::Redis => format!("{}=redis://{}", p.name, p.address()),
                _ => format!("{}={}", p.name, p.url("")),
            })
            .collect();
        if o.kafka.is_some() {
            // The first of a list of brokers (`--watch` is comma-separated too).
            watch.push(format!("broker=tcp://{}", kafka.split(',').next().unwrap_or_default()));
        }
        if let Some(r) = &o.redis {
            watch.push(format!("redis={r}"));
        }
        watch.extend(
            gateway_ports
                .iter()
                .enumerate()
                .map(|(i, port)| format!("gateway-{}=http://127.0.0.1:{port}", i + 1)),
        );
        watch.extend(nginx_port.map(|port| format!("nginx=http://127.0.0.1:{port}/_status")));
        watch.extend(sim_port.map(|port| format!("market-sim=http://127.0.0.1:{port}")));
        for (i, &port) in gateway_ports.iter().enumerate() {
            let i = i + 1;
            let name = format!("gateway-{i}");
            let matcher = matcher_url.clone().unwrap_or_default();
            let mut args = vec![
                "--order-svc".into(),
                order_urls.join(","),
                "--matcher".into(),
                matcher,
                // The market-data feed (`GET /ws`) reads the matcher's events.
                "--brokers".into(),
                kafka.clone(),
                "--watch".into(),
                watch.join(","),
                "--wake-listen".into(),
                format!("127.0.0.1:{port}"),
            ];
            args.extend(fetch_wait(5));
            let mut deps = broker_dep.clone();
            deps.extend(order_names.iter().cloned());
            deps.push("matcher".into());
            // Accounts: users and keys in Redis, tokens signed with the run directory's secret.
            if o.auth {
                args.extend(["--redis".into(), redis.clone(), "--jwt-secret-file".into()]);
                args.push(secret_path(&o.dir).display().to_string());
                deps.extend(backends.iter().filter(|b| b.as_str() == "redis").cloned());
            } else {
                args.push("--no-auth".into());
            }
            procs.push(service(&name, Kind::Gateway, "gateway", port, args, deps));
        }
        if let Some(port) = nginx_port {
            let conf = o.dir.join("nginx").join("nginx.conf");
            let args = vec![
                "-c".into(),
                conf.display().to_string(),
                "-p".into(),
                o.dir.join("nginx").display().to_string(),
                "-e".into(),
                o.dir.join("nginx").join("nginx-error.log").display().to_string(),
            ];
            let deps = vec!["gateway-1".into(), "gateway-2".into(), "matcher".into()];
            let mut p = common("nginx".into(), Kind::Nginx, o.nginx.clone(), args, port, deps);
            p.live = Probe::Http("/healthz".into());
            p.ready = Probe::Http("/healthz".into());
            procs.push(p);
        }
        if let (Some(port), Some(nginx)) = (sim_port, nginx_port) {
            let args = vec![
                "--url".into(),
                format!("http://127.0.0.1:{nginx}"),
                "--password-file".into(),
                sim_secret_path(&o.dir).display().to_string(),
            ];
            let mut p = service("market-sim", Kind::Sim, "market-sim", port, args, vec!["nginx".into()]);
            // Alive is enough: the stack is up whether or not the market has started quoting.
            p.ready = Probe::Http("/healthz".into());
            procs.push(p);
        }
        if o.prometheus {
            let port = o.ports.pick(fixed::PROMETHEUS);
            let dir = o.dir.join("prometheus");
            let args = vec![
                format!("--config.file={}", dir.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                "--storage.tsdb.retention.time=2d".into(),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn".into(),
            ];
            let mut p =
                common("prometheus".into(), Kind::Prometheus, "prometheus".into(), args, port, vec![]);
            p.live = Probe::Http("/-/healthy".into());
            p.ready = Probe::Http("/-/ready".into());
            procs.push(p);
        }
        let cors_origin = o.cors_origin.clone();
        Ok(Plan { dir: o.dir.clone(), procs, kafka, redis, root: o.root.clone(), cors_origin })
    }

    /// The processes Prometheus scrapes: ours (each serves `/metrics`).
    pub fn scraped(&self) -> Vec<&Proc> {
        let ours = [Kind::Matcher, Kind::OrderSvc, Kind::Gateway, Kind::Sim];
        self.procs.iter().filter(|p| ours.contains(&p.kind)).collect()
    }

    /// A process by name.
    pub fn get(&self, name: &str) -> Option<&Proc> {
        self.procs.iter().find(|p| p.name == name)
    }

    /// The names, comma-separated (for "no such process" messages).
    pub fn names(&self) -> String {
        self.procs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Writes what the processes need on disk before they start: the run directory, nginx's
    /// config and temp directories.
    pub fn prepare(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let secret = secret_path(&self.dir);
        let wants_secret = self.procs.iter().any(|p| p.flag("--jwt-secret-file").is_some());
        if wants_secret && !secret.exists() {
            write_secret(&secret)?;
        }
        let sim_secret = sim_secret_path(&self.dir);
        if self.procs.iter().any(|p| p.kind == Kind::Sim) && !sim_secret.exists() {
            write_secret(&sim_secret)?;
        }
        if self.procs.iter().any(|p| p.kind == Kind::Prometheus) {
            let dir = self.dir.join("prometheus");
            std::fs::create_dir_all(dir.join("data"))?;
            let targets: Vec<(String, String)> =
                self.scraped().iter().map(|p| (p.name.clone(), p.address())).collect();
            std::fs::write(dir.join("prometheus.yml"), prometheus_config(&targets))?;
        }
        if let Some(nginx) = self.procs.iter().find(|p| p.kind == Kind::Nginx) {
            let run = self.dir.join("nginx");
            for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                std::fs::create_dir_all(run.join("nginx-tmp").join(sub))?;
            }
            let gateways: Vec<String> =
                self.procs.iter().filter(|p| p.kind == Kind::Gateway).map(Proc::address).collect();
            let matcher = self.get("matcher").map(Proc::address).unwrap_or_default();
            let template = std::fs::read_to_string(self.root.join("nginx/nginx.conf.template"))?;
            let conf = render_nginx(
                &template,
                &NginxValues {
                    run: run.display().to_string(),
                    listen: nginx.address(),
                    gateways: [gateways[0].clone(), gateways[1].clone()],
                    matcher,
                    frontend: self.root.join("frontend").canonicalize()?.display().to_string(),
                    cors_origin: self.cors_origin.clone().unwrap_or_else(|| nginx.url("")),
                },
            );
            std::fs::write(run.join("nginx.conf"), conf)?;
        }
        Ok(())
    }
}

/// Prometheus's configuration: every 5 s, each of `targets` (`(process, host:port)`), labelled
/// with its process name. `docker-compose.yml`'s `prometheus/prometheus.yml` is this with compose's
/// addresses (a test checks).
pub fn prometheus_config(targets: &[(String, String)]) -> String {
    let mut out = String::from(
        "# Generated from the stack's plan (stack/src/plan.rs): every service's /metrics.\n\
         global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nscrape_configs:\n  - job_name: trading-lab\n    static_configs:\n",
    );
    for (name, address) in targets {
        out.push_str(&format!("      - targets: [\"{address}\"]\n        labels: {{process: \"{name}\"}}\n"));
    }
    out
}

/// The session-token secret of a run directory: generated once (32 random bytes, hex, mode 0600)
/// and reused, so sessions survive a restart of the stack.
pub fn secret_path(dir: &Path) -> PathBuf {
    dir.join("jwt.secret")
}

/// The simulated market maker's password (its accounts `sim-maker` and `sim-taker`), generated
/// like the token secret.
pub fn sim_secret_path(dir: &Path) -> PathBuf {
    dir.join("sim.secret")
}

fn write_secret(path: &Path) -> anyhow::Result<()> {
    use std::io::Read as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(f, "{hex}")?;
    Ok(())
}

/// Tansu's command line: durable sqlite storage (`tansu.db` in its working directory, the run
/// directory), listening and advertised on 127.0.0.1.
pub fn tansu_args(port: u16) -> Vec<String> {
    let url = format!("tcp://127.0.0.1:{port}");
    [
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
        "--storage-engine",
        "sqlite://tansu.db",
        "--cluster-id",
        "trading-lab",
    ]
    .map(String::from)
    .to_vec()
}

fn redis_args(port: u16, durable: bool, dir: &Path) -> Vec<String> {
    let mut args = vec!["--port".to_owned(), port.to_string(), "--bind".into(), "127.0.0.1".into()];
    if durable {
        args.extend(["--save", "60 1", "--appendonly", "yes", "--dir"].map(String::from));
        args.push(dir.display().to_string());
    } else {
        args.extend(["--save", "", "--appendonly", "no"].map(String::from));
    }
    args
}

/// The placeholders of `nginx/nginx.conf.template`, in the order of [`NginxValues`]' fields.
pub const NGINX_PLACEHOLDERS: [&str; 7] =
    ["@RUN@", "@LISTEN@", "@GATEWAY_1@", "@GATEWAY_2@", "@MATCHER@", "@FRONTEND@", "@CORS_ORIGIN@"];

/// What fills in nginx's template.
pub struct NginxValues {
    /// A writable directory (pid file, logs, temp files).
    pub run: String,
    /// `address:port` to listen on.
    pub listen: String,
    /// The two gateways, `host:port`.
    pub gateways: [String; 2],
    /// The matcher front, `host:port`.
    pub matcher: String,
    /// The static page's directory.
    pub frontend: String,
    /// The one other origin a browser may call the API from (CORS).
    pub cors_origin: String,
}

/// Fills in nginx's template.
pub fn render_nginx(template: &str, v: &NginxValues) -> String {
    let values = [&v.run, &v.listen, &v.gateways[0], &v.gateways[1], &v.matcher, &v.frontend, &v.cors_origin];
    NGINX_PLACEHOLDERS.iter().zip(values).fold(template.to_owned(), |conf, (k, v)| conf.replace(k, v))
}

/// The Tansu binary: `$TANSU_BIN`, else `~/.cargo/bin/tansu-lab` (`broker/build`: Tansu with its
/// SQLite statements kept prepared), else a stock `~/.cargo/bin/tansu`, else `tansu` on `PATH`.
pub fn tansu_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return p.into();
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    ["tansu-lab", "tansu"]
        .iter()
        .map(|name| home.join(".cargo/bin").join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| "tansu".into())
}

/// Whether the broker binary `tansu` holds every fetch for the consumer's whole wait, data or not,
/// as stock Tansu does: yes unless `broker/build` made it (its stamp beside it), whose build
/// answers a fetch with data at once and a held one when its topic is written.
pub fn holds_every_fetch(tansu: &Path) -> bool {
    let mut stamp = tansu.as_os_str().to_owned();
    stamp.push(".stamp");
    !Path::new(&stamp).is_file()
}

/// Debian's nginx (`/usr/sbin` is not on every user's `PATH`), else `nginx` on `PATH`.
pub fn nginx_binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/nginx");
    if sbin.exists() {
        sbin.to_owned()
    } else {
        "nginx".into()
    }
}

/// The directory of the running executable: `target/<profile>` for `lab` (its services are built
/// beside it); for a test executable (`target/<profile>/deps/…`), its parent.
pub fn own_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(Path::to_owned).unwrap_or(dir)
    } else {
        dir
    }
}

/// The repository root: `$LAB_ROOT` (`./lab` sets it), else this crate's parent directory as it
/// was at build time.
pub fn repo_root() -> PathBuf {
    std::env::var_os("LAB_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_plan_is_design_section_one() {
        let mut o = Options::native("/tmp/x", Ports::Fixed);
        o.prometheus = true;
        let plan = Plan::build(&o).unwrap();
        let ports: Vec<(&str, u16)> = plan.procs.iter().map(|p| (p.name.as_str(), p.port)).collect();
        assert_eq!(
            ports,
            [
                ("broker", 19092),
                ("redis", 16379),
                ("matcher", 9201),
                ("order-svc-1", 9101),
                ("order-svc-2", 9102),
                ("gateway-1", 9001),
                ("gateway-2", 9002),
                ("nginx", 8080),
                ("market-sim", 9301),
                ("prometheus", 9090)
            ]
        );
        let watched = plan.get("gateway-1").and_then(|g| g.flag("--watch")).unwrap_or_default();
        for name in ["broker=tcp://", "redis=redis://", "nginx=http://127.0.0.1:8080/_status", "market-sim="]
        {
            assert!(watched.contains(name), "the system map watches {name}: {watched}");
        }
        assert_eq!(plan.scraped().len(), 6, "Prometheus scrapes our six services");
        let g = plan.get("gateway-2").unwrap();
        assert_eq!(g.flag("--order-svc"), Some("http://127.0.0.1:9101,http://127.0.0.1:9102"));
        assert_eq!(g.flag("--matcher"), Some("http://127.0.0.1:9201"));
        assert_eq!(g.flag("--brokers"), Some("127.0.0.1:19092"));
        assert!(g.deps.iter().any(|d| d == "broker"), "the gateway's feed reads the broker");
        assert_eq!(plan.get("matcher").unwrap().flag("--brokers"), Some("127.0.0.1:19092"));
        // Wake-ups: order-svc → the matcher's port, the matcher → the gateways' (UDP).
        let m = plan.get("matcher").unwrap();
        assert_eq!(m.flag("--wake-listen"), Some("127.0.0.1:9201"));
        assert_eq!(m.flag("--snapshot-dir"), Some("/tmp/x/snapshots"));
        assert_eq!(m.flag("--wake"), Some("127.0.0.1:9001,127.0.0.1:9002"));
        assert_eq!(plan.get("order-svc-2").unwrap().flag("--wake"), Some("127.0.0.1:9201"));
        assert_eq!(g.flag("--wake-listen"), Some("127.0.0.1:9002"));
    }

    #[test]
    fn more_than_one_matcher_share_the_partitions() {
        let mut o = Options::native("/tmp/x", Ports::Fixed);
        assert!(!Plan::build(&o)
            .unwrap()
            .get("matcher")
            .unwrap()
            .args
            .iter()
            .any(|a| a == "--share-partitions"));
        o.matchers = 2;
        let plan = Plan::build(&o).unwrap();
        for (name, port) in [("matcher", 9201), ("matcher-2", 9202)] {
            let m = plan.get(name).unwrap_or_else(|| panic!("{name} in the plan"));
            assert_eq!(m.port, port);
            assert!(m.args.iter().any(|a| a == "--share-partitions"), "{name} shares the partitions");
            assert_eq!(m.flag("--snapshot-dir"), Some("/tmp/x/snapshots"), "one directory for both");
            assert_eq!(m.flag("--instance"), Some(name));
        }
        assert_eq!(plan.get("gateway-1").unwrap().flag("--matcher"), Some("http://127.0.0.1:9201"));
    }

    #[test]
    fn every_dependency_comes_first() {
        let plan = Plan::build(&Options::native("/tmp/x", Ports::Free)).unwrap();
        for (i, p) in plan.procs.iter().enumerate() {
            for d in &p.deps {
                let at = plan.procs.iter().position(|q| &q.name == d).expect("dependency exists");
                assert!(at < i, "{} depends on {d}, which starts later", p.name);
            }
        }
    }

    #[test]
    fn existing_backends_are_used_not_started() {
        let mut o = Options::native("/tmp/x", Ports::Free);
        o.kafka = Some("10.1.1.1:9092".into());
        o.redis = Some("redis://10.1.1.1:6379".into());
        let plan = Plan::build(&o).unwrap();
        assert!(plan.get("broker").is_none() && plan.get("redis").is_none());
        assert_eq!(plan.get("matcher").unwrap().flag("--redis"), Some("redis://10.1.1.1:6379"));
        assert!(plan.get("matcher").unwrap().deps.is_empty());
    }

    #[test]
    fn consumers_wait_briefly_only_against_a_broker_that_holds_every_fetch() {
        let dir = std::env::temp_dir().join(format!("stack-fetch-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tansu = dir.join("tansu-lab");
        std::fs::write(&tansu, "").unwrap();
        let mut o = Options::native("/tmp/x", Ports::Free);
        o.tansu = tansu.clone();
        let waits = |o: &Options| {
            let plan = Plan::build(o).unwrap();
            ["matcher", "gateway-1", "gateway-2"]
                .map(|name| plan.get(name).unwrap().flag("--kafka-fetch-wait-ms").map(str::to_owned))
        };
        // No stamp beside it: stock Tansu, which holds a fetch for the whole wait.
        assert!(holds_every_fetch(&tansu));
        assert_eq!(waits(&o), [Some("2".into()), Some("5".into()), Some("5".into())]);
        // broker/build's: the services' defaults.
        std::fs::write(dir.join("tansu-lab.stamp"), "0123\n").unwrap();
        assert!(!holds_every_fetch(&tansu));
        assert_eq!(waits(&o), [None, None, None]);
        // A broker of the user's: the defaults too (Kafka answers a held fetch on a write).
        std::fs::remove_file(dir.join("tansu-lab.stamp")).unwrap();
        o.kafka = Some("10.1.1.1:9092".into());
        assert_eq!(waits(&o), [None, None, None]);
        assert_eq!(
            Plan::build(&Options::native("/tmp/x", Ports::Free))
                .unwrap()
                .get("broker")
                .unwrap()
                .env
                .iter()
                .find(|(k, _)| k == "TOKIO_WORKER_THREADS"),
            Some(&("TOKIO_WORKER_THREADS".to_owned(), "1".to_owned()))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_secret_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("stack-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut o = Options::native(&dir, Ports::Free);
        o.nginx_front = false;
        let plan = Plan::build(&o).unwrap();
        assert_eq!(
            plan.get("gateway-1").unwrap().flag("--jwt-secret-file"),
            Some(secret_path(&dir).to_str().unwrap())
        );
        plan.prepare().unwrap();
        let first = std::fs::read_to_string(secret_path(&dir)).unwrap();
        assert_eq!(first.trim().len(), 64);
        plan.prepare().unwrap();
        assert_eq!(std::fs::read_to_string(secret_path(&dir)).unwrap(), first, "reused");
        let mode = std::fs::metadata(secret_path(&dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nginx_needs_two_gateways() {
        let mut o = Options::native("/tmp/x", Ports::Free);
        o.gateways = 1;
        assert!(Plan::build(&o).is_err());
    }

    #[test]
    fn the_template_is_filled_in_completely() {
        let template = std::fs::read_to_string(repo_root().join("nginx/nginx.conf.template")).unwrap();
        let v = NginxValues {
            run: "/r".into(),
            listen: "127.0.0.1:1".into(),
            gateways: ["127.0.0.1:2".into(), "127.0.0.1:3".into()],
            matcher: "127.0.0.1:4".into(),
            frontend: "/f".into(),
            cors_origin: "http://example.org".into(),
        };
        let conf = render_nginx(&template, &v);
        assert!(!conf.contains('@'), "a placeholder left: {conf}");
        for p in NGINX_PLACEHOLDERS {
            assert!(template.contains(p), "the template uses {p}");
        }
        assert!(conf.contains("server 127.0.0.1:3 "));
    }
}
