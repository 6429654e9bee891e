//! What the integration tests share. The stack itself comes from the `stack` crate, the same
//! description and supervisor `./lab up` runs: [`Stack`] builds its plan on free loopback ports in
//! a fresh directory (so tests run in parallel), starts it, and stops it (front to back, by
//! process group) when dropped. The rest is test plumbing: HTTP and Kafka readers, polling.
//!
//! Binaries come from the same `target/<profile>` directory as the test executable (`./lab test`
//! builds them first); the broker is `$TANSU_BIN`, else `~/.cargo/bin/tansu-lab` (`broker/build`),
//! else `~/.cargo/bin/tansu`, else `tansu` on `PATH`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

pub use nix::sys::signal::Signal;
pub use stack::plan::free_port;
pub use stack::{Kind, Options, Plan, Ports, Probe, Restart, Supervisor};

pub mod faults;

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/trading-lab-itest-<pid>-<n>`.
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "trading-lab-itest-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `ready` every 50 ms until it is true or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} not ready after {timeout:?}")
}

/// `lab <args> --run-dir <dir>` as a user runs it (this build's binary), with the tests' matcher
/// tuning (no pinned core, a short spin).
pub fn lab(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(our_binary("lab"));
    c.args(args)
        .arg("--run-dir")
        .arg(dir)
        .env("MATCHER_PIN_CORE", "none")
        .env("MATCHER_SPIN", "1000")
        .stdin(std::process::Stdio::null());
    c
}

/// Stops the `lab` stack of a run directory when dropped, whatever the test did: `lab down`, then
/// any process group the state file still names is killed (what `lab down` would do).
pub struct LabCleanup<'a>(pub &'a Path);

impl Drop for LabCleanup<'_> {
    fn drop(&mut self) {
        let _ = lab(self.0, &["down"]).output();
        for p in stack::state::State::read(self.0).map(|s| s.procs).unwrap_or_default() {
            if let Some(g) = p.pid {
                stack::supervisor::kill_group(g, Signal::SIGKILL);
            }
        }
    }
}

/// A binary of this workspace, next to the test executable.
pub fn our_binary(name: &str) -> PathBuf {
    let path = stack::plan::own_bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` first (./lab test does)",
        path.display()
    );
    path
}

/// One process's HTTP address, and the credential requests to it carry, if any.
#[derive(Clone, Debug)]
pub struct Service {
    /// Its name in the plan.
    pub name: String,
    /// Its port.
    pub port: u16,
    /// A session token or API key sent as `Authorization: Bearer …` by [`Service::client`].
    pub token: Option<String>,
}

impl Service {
    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// An HTTP client that sends this service's credential with every request.
    pub fn client(&self) -> reqwest::blocking::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            let value = format!("Bearer {t}").parse().expect("a header value");
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .default_headers(headers)
            .build()
            .expect("http client")
    }
}

/// The password [`signup`] gives a user.
pub fn password_of(user: &str) -> String {
    format!("{user}-secret-pw")
}

/// Signs `user` up through `svc` (a gateway or nginx; a taken name is fine) and logs in: the
/// session token.
pub fn signup(svc: &Service, user: &str) -> String {
    let creds = serde_json::json!({"username": user, "password": password_of(user)});
    let r = http().post(svc.url("/api/v1/auth/signup")).json(&creds).send().expect("sign-up");
    assert!(matches!(r.status().as_u16(), 201 | 400), "sign-up {user}: {}", r.status());
    let r = http().post(svc.url("/api/v1/auth/login")).json(&creds).send().expect("login");
    assert_eq!(r.status().as_u16(), 200, "login {user}");
    let v: serde_json::Value = r.json().expect("login JSON");
    v["access_token"].as_str().expect("a token").to_owned()
}

/// A stack of the `stack` crate's plan, on free ports in a temp dir, started and ready.
pub struct Stack {
    /// The supervisor (no restarts unless [`Stack::with_restarts`] asked: the tests kill and
    /// start processes themselves). Declared
    /// first, so it stops everything before the directory goes.
    pub sup: Supervisor,
    /// Data and logs.
    pub dir: TempDir,
    /// Session tokens by (process, user), so a test signs each user up once.
    tokens: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
}

impl Stack {
    /// Broker, Redis, the matcher, `order_svcs` order-svc, `gateways` gateways, and nginx in
    /// front if asked; panics (failing the test) with the failing process's log.
    pub fn start(order_svcs: usize, gateways: usize, nginx: bool) -> Stack {
        Stack::start_with_gateway_args(order_svcs, gateways, nginx, &[])
    }

    /// A stack as [`Stack::start`] whose gateways are also started with `args`.
    pub fn start_with_gateway_args(order_svcs: usize, gateways: usize, nginx: bool, args: &[&str]) -> Stack {
        Stack::with(
            |o| {
                o.order_svcs = order_svcs;
                o.gateways = gateways;
                o.nginx_front = nginx;
            },
            |p| {
                for g in p.procs.iter_mut().filter(|p| p.kind == Kind::Gateway) {
                    g.args.extend(args.iter().map(|a| a.to_string()));
                }
            },
        )
    }

    /// Broker, Redis, `matchers` matchers each started with `args` too, and one order-svc: the
    /// matcher's own tests (no gateways, no nginx).
    pub fn start_with_matcher_args(matchers: usize, args: &[&str]) -> Stack {
        Stack::with(
            |o| {
                o.order_svcs = 1;
                o.gateways = 0;
                o.nginx_front = false;
                o.matchers = matchers;
            },
            |p| {
                for m in p.procs.iter_mut().filter(|p| p.kind == Kind::Matcher) {
                    m.args.extend(args.iter().map(|a| a.to_string()));
                }
            },
        )
    }

    /// A stack from the native options, edited by `options`, then its plan edited by `plan`.
    /// Test tuning: our services and Redis log at `info` (the broker stays at the plan's `warn`:
    /// Tansu traces every fetch at `info`); the matcher is not pinned and spins briefly (tests
    /// run side by side on two cores); stops get 5 s at most.
    pub fn with(options: impl Fn(&mut Options), plan: impl Fn(&mut Plan)) -> Stack {
        Stack::with_restarts(None, options, plan)
    }

    /// [`Stack::with`], with the supervisor restarting a process that dies (`restart`) as `./lab
    /// up`'s does, each time its owner calls [`Supervisor::tick`] (the fault harness,
    /// [`faults`]).
    ///
    /// Free ports are checked when they are chosen, and something else on the machine can take
    /// one before the stack starts (seen once in CI: a matcher's port taken in between). Then the
    /// whole stack is planned again on other ports, up to three times.
    pub fn with_restarts(
        restart: Option<Restart>,
        options: impl Fn(&mut Options),
        plan: impl Fn(&mut Plan),
    ) -> Stack {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            match Stack::try_start(restart, &options, &plan) {
                Ok(stack) => return stack,
                Err(e) if attempt < ATTEMPTS && format!("{e:#}").contains(stack::supervisor::PORT_TAKEN) => {
                    eprintln!("itest: {e:#}; planning the stack again on other ports");
                }
                Err(e) => panic!("the stack did not start: {e:#}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start(
        restart: Option<Restart>,
        options: &impl Fn(&mut Options),
        plan: &impl Fn(&mut Plan),
    ) -> anyhow::Result<Stack> {
        let dir = TempDir::new();
        let mut o = Options::native(dir.path(), Ports::Free);
        o.durable_redis = false;
        o.sim = false;
        options(&mut o);
        let mut p = Plan::build(&o).expect("a plan");
        for proc in p.procs.iter_mut().filter(|p| p.kind != Kind::Broker) {
            proc.env.push(("RUST_LOG".into(), "info".into()));
            if proc.kind == Kind::Matcher {
                proc.env.push(("MATCHER_PIN_CORE".into(), "none".into()));
                proc.env.push(("MATCHER_SPIN".into(), "1000".into()));
            }
            proc.stop_grace = proc.stop_grace.min(Duration::from_secs(5));
        }
        plan(&mut p);
        let mut sup = Supervisor::new(p, restart);
        sup.start_all(&AtomicBool::new(false))?;
        Ok(Stack { sup, dir, tokens: Default::default() })
    }

    /// A process's address.
    pub fn svc(&self, name: &str) -> Service {
        let p = self.sup.proc(name).unwrap_or_else(|| panic!("no {name} in this stack"));
        Service { name: name.to_owned(), port: p.port, token: None }
    }

    /// A process's address with `user`'s session token (signed up and logged in on first use).
    pub fn as_user(&self, name: &str, user: &str) -> Service {
        let svc = self.svc(name);
        let key = (name.to_owned(), user.to_owned());
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let token = tokens.entry(key).or_insert_with(|| signup(&svc, user)).clone();
        Service { token: Some(token), ..svc }
    }

    /// Every process of a kind, in plan order.
    pub fn all(&self, kind: Kind) -> Vec<Service> {
        let procs = &self.sup.plan().procs;
        procs.iter().filter(|p| p.kind == kind).map(|p| self.svc(&p.name)).collect()
    }

    /// The broker's `host:port`.
    pub fn kafka(&self) -> String {
        self.sup.plan().kafka.clone()
    }

    /// Makes `user` (signed up already) an `operator` or a `trader`, as `./lab role` does.
    pub fn grant(&self, user: &str, role: &str) -> anyhow::Result<()> {
        stack::commands::set_role(&self.sup.plan().redis, user, role)
    }

    /// One Redis command on the stack's Redis: the first line of the answer (`:42`, `+OK`, ...).
    pub fn redis(&self, args: &[&str]) -> String {
        stack::commands::redis_command(&self.sup.plan().redis, args).expect("Redis answers").trim().to_owned()
    }

    /// SIGKILLs a process's group (a crash) and reaps it.
    pub fn kill(&mut self, name: &str) {
        self.sup.kill(name).expect("kill");
    }

    /// Sends a signal to a process's group (no reaping: [`start`](Stack::start) does that).
    pub fn signal(&self, name: &str, signal: Signal) {
        self.sup.signal(name, signal).expect("signal");
    }

    /// Starts a process again and waits until it is alive (`/healthz`, or its port).
    pub fn start_again(&mut self, name: &str) {
        if let Err(e) = self.sup.start(name) {
            panic!("{e:#}");
        }
    }

    /// SIGTERM, then SIGKILL after `grace`: how it exited, or `None` if it had to be killed.
    pub fn terminate(&mut self, name: &str, grace: Duration) -> Option<ExitStatus> {
        self.sup.terminate(name, grace).expect("terminate")
    }

    /// The run directory (logs, data, the matcher's `snapshots/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log file.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The last 30 lines of its log, for failure messages.
    pub fn tail(&self, name: &str) -> String {
        self.sup.tail(name, 30)
    }

    /// Reads every message of `topic` from the beginning of each of its `partitions`, until
    /// `want` messages arrived or `timeout` passed: (partition, offset, payload).
    pub fn read_all(
        &self,
        topic: &str,
        partitions: i32,
        want: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<(i32, i64, Vec<u8>)>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.kafka())
            .set("group.id", format!("itest-reader-{}", free_port()))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut got = Vec::new();
        let deadline = Instant::now() + timeout;
        while got.len() < want && Instant::now() < deadline {
            if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
                let msg = msg?;
                got.push((msg.partition(), msg.offset(), msg.payload().unwrap_or_default().to_vec()));
            }
        }
        Ok(got)
    }

    /// Every event on `topic` (both partitions, read for `timeout`) by its id field (`trade_id`
    /// or `event_id`): how many times each. `order-events` messages are packs of events
    /// (`common::envelope::unpack_events`); a `trades` message is one.
    pub fn counted(
        &self,
        topic: &str,
        field: &str,
        timeout: Duration,
    ) -> std::collections::HashMap<String, usize> {
        let mut seen = std::collections::HashMap::new();
        for (_, _, message) in self.read_all(topic, 2, usize::MAX, timeout).unwrap() {
            for event in common::envelope::unpack_events(&message) {
                let v: serde_json::Value = serde_json::from_slice(event).unwrap();
                *seen.entry(v[field].as_str().unwrap().to_owned()).or_insert(0) += 1;
            }
        }
        seen
    }
}

/// How many order writes (`POST /api/v1/orders`, `POST /order`) an order-svc has served, from its
/// `/metrics`: proof that a refused request never reached it.
pub fn order_writes(svc: &Service) -> u64 {
    let text = http().get(svc.url("/metrics")).send().and_then(|r| r.text()).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("http_requests_total") && l.contains("method=\"POST\""))
        .filter(|l| l.contains("route=\"/api/v1/orders\"") || l.contains("route=\"/order\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A blocking HTTP client with a bounded timeout.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(15)).build().expect("http client")
}
