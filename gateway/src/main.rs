//! `gateway`: flags (with env-var fallbacks) → [`gateway::run`].

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
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    common::http::logging::init();
    let args = Args::parse();
    gateway::run(gateway::Config {
        listen: args.listen,
        instance: args.instance,
        order_svcs: args.order_svc,
        matcher: args.matcher,
        body_limit: args.body_limit,
        upstream_timeout: Duration::from_millis(args.upstream_timeout_ms),
    })
    .await
}
