//! `matcher`: flags (with env-var fallbacks) and logs → [`matcher::runtime::run`], stopped (and
//! drained) by SIGINT/SIGTERM.

use clap::Parser;
use matcher::runtime::{self, Config};
use matcher::Capacity;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Trading Lab matching engine: Kafka `orders` → pinned book → Redis, `trades`, `order-events`.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// HTTP front address.
    #[arg(long, env = "MATCHER_LISTEN", default_value = "127.0.0.1:9201")]
    listen: String,
    /// Instance name.
    #[arg(long, env = "MATCHER_INSTANCE", default_value = "matcher-1")]
    instance: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Consumer group: its committed offsets mark what is persisted.
    #[arg(long, env = "MATCHER_GROUP", default_value = "matcher")]
    group: String,
    /// Commands topic.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    orders_topic: String,
    /// Fills topic.
    #[arg(long, env = "TRADES_TOPIC", default_value = "trades")]
    trades_topic: String,
    /// Events topic.
    #[arg(long, env = "EVENTS_TOPIC", default_value = "order-events")]
    events_topic: String,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:16379")]
    redis: String,
    /// Core to pin the book thread to; `none` to leave it unpinned. Default: the last core.
    #[arg(long, env = "MATCHER_PIN_CORE")]
    pin_core: Option<String>,
    /// Empty polls before the book and I/O threads park (0: park at once). Short: on a machine
    /// the whole stack shares, a long spin takes CPU from the broker (at 20,000, the matcher used
    /// 14 % of a core at 100 orders/s; at 500, 7.5 %, and the ack's p99 fell).
    #[arg(long, env = "MATCHER_SPIN", default_value_t = 500)]
    spin: u32,
    /// Ring capacity.
    #[arg(long, env = "MATCHER_RING", default_value_t = 65_536)]
    ring: usize,
    /// The orders consumer's `fetch.wait.max.ms`: how long the broker may hold a fetch that finds
    /// nothing (`common::kafka::FETCH_WAIT_MS`). Against a broker that holds every fetch this long
    /// whatever it finds (stock Tansu, DESIGN.md §1) a record waits out the rest of it: use 2.
    #[arg(long, env = "MATCHER_KAFKA_FETCH_WAIT_MS", default_value_t = common::kafka::FETCH_WAIT_MS)]
    kafka_fetch_wait_ms: u32,
    /// At most one offset commit per this many milliseconds: one broker request for many batches.
    /// A crash re-emits at most this long's commands, with the same ids — Redis writes are
    /// idempotent and the output topics skip what they hold — and a drain commits at once.
    #[arg(long, env = "MATCHER_COMMIT_INTERVAL_MS", default_value_t = 100)]
    commit_interval_ms: u64,
    /// The output producer's `linger.ms` (trades and events; fractions allowed, as librdkafka's).
    #[arg(long, env = "MATCHER_KAFKA_LINGER_MS", default_value_t = 1.0)]
    kafka_linger_ms: f64,
    /// Where wake-ups from order-svc arrive (UDP `host:port`, usually the HTTP address): with it,
    /// the orders consumer stops fetching after a short spell with nothing to read and resumes on
    /// a wake-up (without one it looks again after a second, backing off to 4 s while it finds
    /// nothing). Without it, it fetches all the time.
    #[arg(long, env = "MATCHER_WAKE_LISTEN")]
    wake_listen: Option<String>,
    /// Whom to wake (UDP `host:port`, comma-separated: the gateways' market-data consumers) once
    /// the events are written.
    #[arg(long, env = "MATCHER_WAKE", value_delimiter = ',')]
    wake: Vec<String>,
    /// Seconds an ended order's keys stay in Redis (`order:`, `fills:`, `trade:`; `client:` only
    /// once its id has also left the book's duplicate window); 0 keeps them for ever. The
    /// `orders` and `trades` topics stay the durable history.
    #[arg(long, env = "MATCHER_REDIS_RETENTION_SECS", default_value_t = 86_400)]
    redis_retention_secs: u64,
    /// Where book snapshots go (files, versioned and checksummed): a start loads the newest good
    /// one and replays the log only from its offsets. Without it, a start replays the whole log.
    #[arg(long, env = "MATCHER_SNAPSHOT_DIR")]
    snapshot_dir: Option<std::path::PathBuf>,
    /// Commands between two snapshots.
    #[arg(long, env = "MATCHER_SNAPSHOT_EVERY", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every: u64,
    /// Share the orders partitions with the other matchers of the group (`--group`), by leases in
    /// Redis: each owns a share (symbols), rebuilds only those books, and takes over a dead one's
    /// once its leases expire. Without it, this matcher owns every partition (and dozes when idle).
    #[arg(long, env = "MATCHER_SHARE_PARTITIONS")]
    share_partitions: bool,
    /// With shared partitions: how long a partition lease (in Redis) lasts unless its holder
    /// renews it — how soon a dead matcher's partitions move to another.
    #[arg(long, env = "MATCHER_LEASE_MS", default_value_t = 3_000)]
    lease_ms: u32,
}

fn main() -> anyhow::Result<()> {
    common::http::logging::init();
    let args = Args::parse();
    let cores = core_affinity::get_core_ids().map_or(0, |c| c.len());
    let pin_core = match args.pin_core.as_deref() {
        Some("none") => None,
        Some(n) => {
            Some(n.parse().map_err(|_| anyhow::anyhow!("--pin-core: a core number or \"none\", not {n:?}"))?)
        }
        None => cores.checked_sub(1),
    };
    let config = Config {
        listen: args.listen,
        instance: args.instance,
        brokers: args.brokers,
        group: args.group,
        orders_topic: args.orders_topic,
        trades_topic: args.trades_topic,
        events_topic: args.events_topic,
        redis: args.redis,
        pin_core,
        spin: args.spin,
        ring: args.ring,
        capacity: Capacity::default(),
        fetch_wait_ms: args.kafka_fetch_wait_ms,
        commit_interval_ms: args.commit_interval_ms,
        linger_ms: args.kafka_linger_ms,
        wake_listen: args.wake_listen,
        wake: args.wake,
        retention_secs: args.redis_retention_secs,
        snapshot_dir: args.snapshot_dir,
        snapshot_every: args.snapshot_every,
        share_partitions: args.share_partitions,
        lease_ms: args.lease_ms,
    };
    let shutdown = common::shutdown::Shutdown::on_signals()?;
    runtime::run(config, shutdown)
}
