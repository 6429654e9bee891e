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
    /// Empty polls before the book and I/O threads park (0: park at once).
    #[arg(long, env = "MATCHER_SPIN", default_value_t = 20_000)]
    spin: u32,
    /// Ring capacity.
    #[arg(long, env = "MATCHER_RING", default_value_t = 65_536)]
    ring: usize,
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
    };
    let shutdown = common::shutdown::Shutdown::on_signals()?;
    runtime::run(config, shutdown)
}
