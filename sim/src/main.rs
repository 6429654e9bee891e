//! `market-sim`: flags (with env-var fallbacks) and logs → [`market_sim::run`], stopped by
//! SIGINT/SIGTERM (its quotes canceled first) or after `--duration-secs`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Trading Lab's simulated market: quotes both sides of every symbol through the public API,
/// amends with cancel-replace, and crosses now and then, so the book is live.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The public API's base URL (nginx).
    #[arg(long, env = "SIM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Address of its own /healthz, /readyz, /whoami, /metrics.
    #[arg(long, env = "SIM_LISTEN", default_value = "127.0.0.1:9301")]
    listen: String,
    /// Instance name (shown by /whoami).
    #[arg(long, env = "SIM_INSTANCE", default_value = "market-sim")]
    instance: String,
    /// A file holding the password of both accounts (`./lab up` generates one). Wins over
    /// --password.
    #[arg(long, env = "SIM_PASSWORD_FILE")]
    password_file: Option<std::path::PathBuf>,
    /// The password of both accounts (10 to 128 bytes). Prefer --password-file.
    #[arg(long, env = "SIM_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// The account that quotes.
    #[arg(long, env = "SIM_MAKER_USER", default_value = "sim-maker")]
    maker_user: String,
    /// The account that crosses the quotes now and then.
    #[arg(long, env = "SIM_TAKER_USER", default_value = "sim-taker")]
    taker_user: String,
    /// Only these symbols, comma-separated (default: every symbol the exchange lists).
    #[arg(long, env = "SIM_SYMBOLS", value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// Actions a second, all symbols together (each tick: one place, amend or cross, and at most
    /// one status read).
    #[arg(long, env = "SIM_RATE", default_value_t = 4.0)]
    rate: f64,
    /// Quotes per side of each symbol.
    #[arg(long, env = "SIM_LEVELS", default_value_t = 3)]
    levels: usize,
    /// Bid-ask spread in basis points of the reference price (at least two ticks); levels are
    /// half a spread apart.
    #[arg(long, env = "SIM_SPREAD_BPS", default_value_t = 10)]
    spread_bps: u32,
    /// One step of the mid's random walk, in basis points of the reference (at least one tick).
    #[arg(long, env = "SIM_WALK_BPS", default_value_t = 2)]
    walk_bps: u32,
    /// Chance that an action is a cross (an IOC from the taker that hits the best quote).
    #[arg(long, env = "SIM_CROSS_PROB", default_value_t = 0.15)]
    cross_prob: f64,
    /// Seed of the walk, sizes and crosses (default: from the clock; logged at start).
    #[arg(long, env = "SIM_SEED")]
    seed: Option<u64>,
    /// Stop after this many seconds (default: run until stopped).
    #[arg(long, env = "SIM_DURATION_SECS")]
    duration_secs: Option<f64>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    common::http::logging::init();
    let args = Args::parse();
    // A file given wins over a password in the environment (`./lab up` passes its file).
    let password = match (&args.password_file, &args.password) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("--password-file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, Some(p)) => p.clone(),
        (None, None) => anyhow::bail!(
            "no password for the simulator's accounts: give --password-file (SIM_PASSWORD_FILE) or --password (SIM_PASSWORD)"
        ),
    };
    let duration = match args.duration_secs {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--duration-secs must be a positive number of seconds, not {s}"),
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let config = market_sim::Config {
        url: args.url.trim_end_matches('/').to_owned(),
        listen: args.listen,
        instance: args.instance,
        password,
        maker_user: args.maker_user,
        taker_user: args.taker_user,
        symbols: args
            .symbols
            .map(|s| s.into_iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect()),
        rate: args.rate,
        levels: args.levels,
        spread_bps: args.spread_bps,
        walk_bps: args.walk_bps,
        cross_prob: args.cross_prob,
        seed,
        duration,
    };
    let shutdown = common::shutdown::Shutdown::on_signals()?;
    market_sim::run(config, shutdown).await
}
