//! `order-svc`: flags (with env-var fallbacks) and logs → [`order_svc::run`], stopped by
//! SIGINT/SIGTERM.

use std::time::Duration;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Trading Lab order entry: validates orders and publishes them to Kafka.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ORDER_SVC_LISTEN", default_value = "127.0.0.1:9101")]
    listen: String,
    /// Instance name (shown by /whoami and in `handled_by`).
    #[arg(long, env = "ORDER_SVC_INSTANCE", default_value = "order-svc-1")]
    instance: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// The commands topic.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    topic: String,
    /// Milliseconds a publish may wait for the broker's acknowledgement before answering 503.
    #[arg(long, env = "ORDER_SVC_DELIVERY_TIMEOUT_MS", default_value_t = 5000)]
    delivery_timeout_ms: u64,
    /// Extra Kafka producer setting, `key=value` (repeatable; broker-specific tuning).
    #[arg(long = "kafka-option", env = "ORDER_SVC_KAFKA_OPTIONS", value_delimiter = ',')]
    kafka_options: Vec<String>,
    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(long, env = "ORDER_SVC_BODY_LIMIT", default_value_t = 4096)]
    body_limit: usize,
    /// Whom to wake once the broker has acknowledged a command (UDP `host:port`, comma-separated:
    /// the matcher's wake-up address), so that its consumer need not poll the broker while idle.
    #[arg(long, env = "ORDER_SVC_WAKE", value_delimiter = ',')]
    wake: Vec<String>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    common::http::logging::init();
    let args = Args::parse();
    let kafka_options = args
        .kafka_options
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--kafka-option {kv:?} is not key=value"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = order_svc::Config {
        listen: args.listen,
        instance: args.instance,
        brokers: args.brokers,
        topic: args.topic,
        delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
        kafka_options,
        body_limit: args.body_limit,
        wake: args.wake,
    };
    let shutdown = common::shutdown::Shutdown::on_signals()?;
    order_svc::run(config, shutdown).await
}
