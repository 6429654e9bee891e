//! One harness for the integration tests: it starts the real Kafka-protocol broker (Tansu, on
//! durable sqlite storage), Redis and our own service binaries as child processes on free
//! loopback ports, waits until each is ready, and stops them (by PID) when dropped. Each test
//! gets its own ports and data directory, so tests run in parallel.
//!
//! Binaries come from the same `target/<profile>` directory as the test executable (`./lab test`
//! builds them first); the broker is `$TANSU_BIN`, else `~/.cargo/bin/tansu`, else `tansu` on
//! `PATH`.
#![forbid(unsafe_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// A free TCP port on 127.0.0.1 (free when asked; the child binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

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

/// A child process with its log file; killed (by PID) when dropped.
pub struct Proc {
    /// Its name in messages.
    pub name: String,
    child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program args…` in `dir`, logging to `<dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        dir: &Path,
    ) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(dir).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", program.display()))?;
        Ok(Proc { name: name.to_owned(), child, log })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. How it exited, or `None` if it
    /// had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }

    /// True while it runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log, for failure messages.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
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

/// A binary of this workspace, next to the test executable.
pub fn our_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` first (./lab test does)",
        path.display()
    );
    path
}

/// The Tansu broker binary.
pub fn tansu_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return p.into();
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let cargo = home.join(".cargo/bin/tansu");
    if cargo.exists() {
        cargo
    } else {
        "tansu".into()
    }
}

/// A Kafka-protocol broker (Tansu) on durable sqlite storage.
pub struct Broker {
    /// The process; `None` while stopped.
    pub proc: Option<Proc>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl Broker {
    /// Starts a broker with its storage under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Broker> {
        let mut broker = Broker { proc: None, port: free_port(), dir: dir.to_owned() };
        broker.restart()?;
        Ok(broker)
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts it on the same port and storage.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // Tansu reads the path after `sqlite://` relative to its working directory: the data dir.
        let storage = "sqlite://tansu.db".to_owned();
        let args = [
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            &storage,
            "--cluster-id",
            "trading-lab-itest",
        ]
        .map(String::from);
        let mut proc = Proc::spawn("tansu", &tansu_binary(), &args, &[], &self.dir)?;
        let port = self.port;
        let up = wait_until("broker", Duration::from_secs(20), || {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
        });
        if let Err(e) = up {
            let tail = proc.tail();
            proc.kill();
            bail!("{e}\n{tail}");
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// Stops it hard (SIGKILL): what a crash looks like to clients.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Creates a topic (the broker does not auto-create).
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.address()).create()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = rt.block_on(admin.create_topics([&topic], &AdminOptions::new()))?;
        for r in results {
            if let Err((topic, code)) = r {
                bail!("creating {topic}: {code}");
            }
        }
        Ok(())
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
            .set("bootstrap.servers", self.address())
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
}

/// A Redis server (Debian's `redis-server`), in memory only.
pub struct Redis {
    /// The process.
    pub proc: Proc,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts one on a free port with its files under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Redis> {
        let port = free_port();
        let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .map(String::from);
        let proc = Proc::spawn("redis", Path::new("redis-server"), &args, &[], dir)?;
        wait_until("redis", Duration::from_secs(10), || {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
        })?;
        Ok(Redis { proc, port })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// nginx (Debian's), from the repository's template, in the foreground as the current user.
pub struct Nginx {
    /// The process.
    pub proc: Proc,
    /// Its port.
    pub port: u16,
}

impl Nginx {
    /// Starts nginx on a free port in front of two gateways and the matcher front.
    pub fn start(dir: &Path, gateways: [u16; 2], matcher: u16) -> anyhow::Result<Nginx> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let template = std::fs::read_to_string(root.join("nginx/nginx.conf.template"))?;
        let port = free_port();
        let run = dir.join("nginx");
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(run.join("nginx-tmp").join(sub))?;
        }
        let conf = template
            .replace("@RUN@", &run.display().to_string())
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@GATEWAY_1@", &format!("127.0.0.1:{}", gateways[0]))
            .replace("@GATEWAY_2@", &format!("127.0.0.1:{}", gateways[1]))
            .replace("@MATCHER@", &format!("127.0.0.1:{matcher}"))
            .replace("@FRONTEND@", &root.join("frontend").canonicalize()?.display().to_string());
        let conf_path = run.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let bin = if Path::new("/usr/sbin/nginx").exists() {
            PathBuf::from("/usr/sbin/nginx")
        } else {
            "nginx".into()
        };
        let args = [
            "-c".to_owned(),
            conf_path.display().to_string(),
            "-p".into(),
            run.display().to_string(),
            "-e".into(),
            run.join("nginx-error.log").display().to_string(),
        ];
        let proc = Proc::spawn("nginx", &bin, &args, &[], dir)?;
        wait_until("nginx", Duration::from_secs(10), || {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", proc.tail()))?;
        Ok(Nginx { proc, port })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    /// SIGTERM, so the master stops its workers: a SIGKILLed master leaves them running, orphaned,
    /// holding the port.
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(5));
    }
}

/// One of our HTTP services, started from its binary.
pub struct Service {
    /// The process.
    pub proc: Proc,
    /// Its HTTP port.
    pub port: u16,
}

impl Service {
    /// Starts binary `name` with `args` (its `--listen` is added) and waits for `/healthz`.
    pub fn start(name: &str, instance: &str, args: &[String], dir: &Path) -> anyhow::Result<Service> {
        let port = free_port();
        let mut all = vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
        all.extend_from_slice(args);
        let proc = Proc::spawn(instance, &our_binary(name), &all, &[("RUST_LOG", "info".into())], dir)?;
        let service = Service { proc, port };
        let url = service.url("/healthz");
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_millis(500)).build()?;
        wait_until(instance, Duration::from_secs(20), || {
            client.get(&url).send().is_ok_and(|r| r.status().is_success())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", service.proc.tail()))?;
        Ok(service)
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
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

/// The native stack, each piece on free ports: broker with the three topics, Redis, the matcher,
/// `order_svcs` order-svc instances, `gateways` gateways in front of them, and nginx in front of
/// those when asked. Everything stops (and the data dir goes) when it is dropped.
pub struct Stack {
    /// nginx, if asked for.
    pub nginx: Option<Nginx>,
    /// The gateways.
    pub gateways: Vec<Service>,
    /// The order-svc instances.
    pub order_svcs: Vec<Service>,
    /// The matcher.
    pub matcher: Service,
    /// The matcher's arguments, to start it again.
    pub matcher_args: Vec<String>,
    /// Redis.
    pub redis: Redis,
    /// The broker.
    pub broker: Broker,
    /// Data and logs; dropped last.
    pub dir: TempDir,
}

impl Stack {
    /// Starts a stack; panics (failing the test) with the failing process's log.
    pub fn start(order_svcs: usize, gateways: usize, nginx: bool) -> Stack {
        let dir = TempDir::new();
        let broker = Broker::start(dir.path()).expect("broker");
        for (topic, partitions) in [("orders", 2), ("trades", 1), ("order-events", 1)] {
            broker.create_topic(topic, partitions).expect("topic");
        }
        let redis = Redis::start(dir.path()).expect("redis");
        let matcher_args: Vec<String> =
            ["--brokers", &broker.address(), "--redis", &redis.url(), "--pin-core", "none", "--spin", "1000"]
                .map(String::from)
                .to_vec();
        let matcher = Service::start("matcher", "matcher", &matcher_args, dir.path()).expect("matcher");
        let order_svcs: Vec<Service> = (1..=order_svcs)
            .map(|i| {
                let name = format!("order-svc-{i}");
                let args = ["--brokers".to_owned(), broker.address(), "--instance".into(), name.clone()];
                Service::start("order-svc", &name, &args, dir.path()).expect("order-svc")
            })
            .collect();
        let urls = order_svcs.iter().map(|s| s.url("")).collect::<Vec<_>>().join(",");
        let gateways: Vec<Service> = (1..=gateways)
            .map(|i| {
                let name = format!("gateway-{i}");
                let args = [
                    "--order-svc".to_owned(),
                    urls.clone(),
                    "--matcher".into(),
                    matcher.url(""),
                    "--instance".into(),
                    name.clone(),
                ];
                Service::start("gateway", &name, &args, dir.path()).expect("gateway")
            })
            .collect();
        let nginx = nginx.then(|| {
            Nginx::start(dir.path(), [gateways[0].port, gateways[1].port], matcher.port).expect("nginx")
        });
        Stack { nginx, gateways, order_svcs, matcher, matcher_args, redis, broker, dir }
    }

    /// Starts the matcher again (after it was killed), with the same arguments.
    pub fn restart_matcher(&mut self, instance: &str) {
        self.matcher =
            Service::start("matcher", instance, &self.matcher_args, self.dir.path()).expect("matcher again");
    }
}

/// A blocking HTTP client with a bounded timeout.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(15)).build().expect("http client")
}
