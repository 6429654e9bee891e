//! `gateway`: flags (with env-var fallbacks) and logs → [`gateway::run`], stopped by SIGINT/SIGTERM.

use std::time::Duration;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Trading Lab API gateway.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:9001")]
    listen: String,
    /// Instance name.
    #[arg(long, env = "GATEWAY_INSTANCE", default_value = "gateway-1")]
    instance: String,
    /// order-svc base URLs, comma-separated.
    #[arg(
        long,
        env = "ORDER_SVC_URLS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9101,http://127.0.0.1:9102"
    )]
    order_svc: Vec<String>,
    /// Matcher front base URL.
    #[arg(long, env = "MATCHER_URL", default_value = "http://127.0.0.1:9201")]
    matcher: String,
    /// Largest request body, in bytes (larger: 413).
    #[arg(long, env = "GATEWAY_BODY_LIMIT", default_value_t = 4096)]
    body_limit: usize,
    /// Milliseconds an upstream may take to answer.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT_MS", default_value_t = 8000)]
    upstream_timeout_ms: u64,
    /// Redis, where users and API keys live.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:16379")]
    redis: String,
    /// The session-token signing secret (at least 32 bytes). Prefer --jwt-secret-file.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// A file holding the session-token signing secret (`./lab up` generates one).
    #[arg(long, env = "JWT_SECRET_FILE")]
    jwt_secret_file: Option<std::path::PathBuf>,
    /// Seconds a session token (and its cookie) lives.
    #[arg(long, env = "GATEWAY_TOKEN_TTL_SECS", default_value_t = 8 * 3600)]
    token_ttl_secs: u64,
    /// Development only: no accounts; every caller is the shared `anonymous` account and a body
    /// may name an account. Without it the gateway refuses to start without a secret.
    #[arg(long, env = "GATEWAY_NO_AUTH")]
    no_auth: bool,
    /// Mark the session cookie `Secure` (when nginx is behind HTTPS).
    #[arg(long, env = "GATEWAY_COOKIE_SECURE")]
    cookie_secure: bool,
    /// Orders (new, cancel) per second per account (bursts of twice that).
    #[arg(long, env = "GATEWAY_RATE_ORDERS_PER_ACCOUNT", default_value_t = 200)]
    rate_orders_per_account: u32,
    /// Orders per second per client address.
    #[arg(long, env = "GATEWAY_RATE_ORDERS_PER_IP", default_value_t = 2000)]
    rate_orders_per_ip: u32,
    /// Logins and sign-ups per minute per client address.
    #[arg(long, env = "GATEWAY_RATE_LOGINS_PER_IP", default_value_t = 60)]
    rate_logins_per_ip: u32,
    /// Failed logins per minute per username before the name is refused for a while.
    #[arg(long, env = "GATEWAY_RATE_FAILED_LOGINS", default_value_t = 5)]
    rate_failed_logins: u32,
    /// Kafka brokers: the market-data feed reads the order-events topic (`GET /ws`).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// The topic of the matcher's events.
    #[arg(long, env = "GATEWAY_EVENTS_TOPIC", default_value = "order-events")]
    events_topic: String,
    /// The market-data consumer's `fetch.wait.max.ms`: how long the broker may hold a fetch that
    /// finds nothing (`common::kafka::FETCH_WAIT_MS`). Against a broker that holds every fetch this
    /// long whatever it finds (stock Tansu, DESIGN.md §1) it is the feed's added latency: use 5.
    #[arg(long, env = "GATEWAY_KAFKA_FETCH_WAIT_MS", default_value_t = common::kafka::FETCH_WAIT_MS)]
    kafka_fetch_wait_ms: u32,
    /// Where the matcher's wake-ups arrive (UDP `host:port`, usually the HTTP address): with it,
    /// the market-data consumer stops fetching after a short spell with nothing to read and
    /// resumes on a wake-up (without one it looks again after a second, backing off to 4 s while
    /// it finds nothing). Without it, it fetches all the time.
    #[arg(long, env = "GATEWAY_WAKE_LISTEN")]
    wake_listen: Option<String>,
    /// Frames a WebSocket session may have queued; a client that falls further behind is
    /// resynced (books get a fresh snapshot), and closed if it keeps falling behind.
    #[arg(long, env = "GATEWAY_WS_QUEUE", default_value_t = 1024)]
    ws_queue: usize,
    /// Seconds between a session's pings and heartbeats.
    #[arg(long, env = "GATEWAY_WS_HEARTBEAT_SECS", default_value_t = 5)]
    ws_heartbeat_secs: u64,
    /// Seconds a WebSocket client may stay silent (not even a pong) before it is closed.
    #[arg(long, env = "GATEWAY_WS_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    ws_idle_timeout_secs: u64,
    /// Most WebSocket sessions open at once.
    #[arg(long, env = "GATEWAY_WS_MAX_SESSIONS", default_value_t = 10_000)]
    ws_max_sessions: usize,
    /// Tests only: the `debug_pause` and `debug_skip` ops.
    #[arg(long, env = "GATEWAY_WS_TEST_HOOKS", hide = true)]
    ws_test_hooks: bool,
    /// Peers whose `X-Real-IP` header names the client, comma-separated addresses, or `any`
    /// (compose, where only nginx reaches the gateways). Others are the client themselves.
    #[arg(long, env = "GATEWAY_TRUSTED_PROXIES", value_delimiter = ',', default_value = "127.0.0.1,::1")]
    trusted_proxies: Vec<String>,
    /// The processes the system map (`GET /api/v1/system`) shows, `name=url` (comma-separated):
    /// `http://h:p` one of our services, `http://h:p/path` nginx's stub_status, `redis://h:p`,
    /// `tcp://h:p` (the broker). Empty: this gateway's own upstreams.
    #[arg(long, env = "GATEWAY_WATCH", value_delimiter = ',')]
    watch: Vec<String>,
    /// An account's own orders-per-second allowance, `account=N` (repeatable, comma-separated).
    #[arg(long, env = "GATEWAY_RATE_ACCOUNT_OVERRIDES", value_delimiter = ',')]
    rate_account_override: Vec<String>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    common::http::logging::init();
    let args = Args::parse();
    let accounts = if args.no_auth {
        None
    } else {
        // A file given wins over a secret in the environment (`./lab up` passes its file even to a
        // shell that exports JWT_SECRET).
        let secret = match (&args.jwt_secret_file, &args.jwt_secret) {
            (None, Some(s)) => s.trim().as_bytes().to_vec(),
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--jwt-secret-file {}: {e}", path.display()))?
                .trim()
                .as_bytes()
                .to_vec(),
            (None, None) => anyhow::bail!(
                "no session-token secret: give --jwt-secret-file (JWT_SECRET_FILE) or --jwt-secret (JWT_SECRET), \
                 or --no-auth for a development gateway without accounts"
            ),
        };
        Some(gateway::Accounts {
            redis: args.redis,
            secret,
            token_ttl: Duration::from_secs(args.token_ttl_secs),
            cookie_secure: args.cookie_secure,
        })
    };
    let account_overrides = args
        .rate_account_override
        .iter()
        .map(|kv| {
            let (account, n) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--rate-account-override {kv:?} is not account=N"))?;
            let n = n
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("--rate-account-override {kv:?}: N must be a number"))?;
            Ok((account.trim().to_owned(), n))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let limits = gateway::limits::Config {
        orders_per_account: args.rate_orders_per_account,
        orders_per_ip: args.rate_orders_per_ip,
        logins_per_ip: args.rate_logins_per_ip,
        failed_logins_per_user: args.rate_failed_logins,
        account_overrides,
    };
    let mut ws = gateway::ws::Config::new(&args.brokers);
    ws.kafka.topic = args.events_topic;
    ws.kafka.fetch_wait_ms = args.kafka_fetch_wait_ms;
    ws.kafka.wake_listen = args.wake_listen;
    ws.queue = args.ws_queue.max(1);
    ws.heartbeat = Duration::from_secs(args.ws_heartbeat_secs.max(1));
    ws.idle_timeout = Duration::from_secs(args.ws_idle_timeout_secs.max(1));
    ws.max_sessions = args.ws_max_sessions;
    ws.test_hooks = args.ws_test_hooks;
    let shutdown = common::shutdown::Shutdown::on_signals()?;
    gateway::run(
        gateway::Config {
            listen: args.listen,
            instance: args.instance,
            order_svcs: args.order_svc,
            matcher: args.matcher,
            body_limit: args.body_limit,
            upstream_timeout: Duration::from_millis(args.upstream_timeout_ms),
            accounts,
            limits,
            trusted_proxies: gateway::accounts::TrustedProxies::parse(&args.trusted_proxies)?,
            ws,
            watch: gateway::system::parse_watch(&args.watch).map_err(|e| anyhow::anyhow!(e))?,
        },
        shutdown,
    )
    .await
}
