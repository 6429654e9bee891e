//! `lab`: the stack's supervisor and the developer commands (`./lab` builds it and hands over).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use stack::commands::{self, Up};
use stack::Ports;

/// Trading Lab: run the exchange natively, and its checks.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// The run directory: logs, data, the state file.
    #[arg(long, global = true, env = "LAB_RUN_DIR", default_value_os_t = stack::plan::repo_root().join("run"))]
    run_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PortPlan {
    /// DESIGN.md §1: nginx 8080, gateways 9001/9002, order-svc 9101/9102, matcher 9201, broker
    /// 19092, Redis 16379.
    Fixed,
    /// Free loopback ports (a second stack beside a running one; tests).
    Free,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the stack: broker (Tansu, sqlite under the run directory), Redis, the matcher, two
    /// order-svc, two gateways, nginx on :8080 (the desk), the simulated market maker; wait until each is ready; restart a process that
    /// dies (capped exponential backoff). Ctrl-C stops it all, front to back.
    /// KAFKA_BROKERS=host:port / REDIS_URL=redis://… use existing ones instead.
    Up {
        /// Return once the stack is ready; it runs on in the background (./lab down stops it).
        #[arg(long, short)]
        detach: bool,
        /// Leave a process that dies down (fault tests).
        #[arg(long)]
        no_restart: bool,
        /// Where the ports come from.
        #[arg(long, value_enum, default_value = "fixed")]
        ports: PortPlan,
        /// Internal: the background supervisor that --detach starts.
        #[arg(long, hide = true)]
        supervise: bool,
        /// Leave out the simulated market maker (market-sim).
        #[arg(long)]
        no_sim: bool,
        /// Also run Prometheus (Debian's), scraping every service every 5 s, on :9090.
        #[arg(long)]
        with_prometheus: bool,
        /// How many matchers: more than one share the orders partitions (symbols) by leases in
        /// Redis, and one takes over a dead one's partitions (matcher, matcher-2, …).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
        matchers: u16,
    },
    /// Make a user an operator (halt/resume a symbol, set its reference price, mass-cancel an
    /// account: the desk's Operator page and /api/v1/admin/*), or a trader again.
    Role {
        /// The username (they sign up first).
        user: String,
        /// `operator` or `trader`.
        role: String,
    },
    /// Stop everything `lab up` started, front to back (SIGTERM, then SIGKILL after a bound).
    Down,
    /// What runs: process, pid, port, ready, restarts, uptime.
    Status {
        /// The same as a JSON array of objects (keys process, pid, port, ready, restarts, uptime_s).
        #[arg(long)]
        json: bool,
    },
    /// How much CPU each process of the running stack uses (with its children; the supervisor
    /// too) over a few seconds, as % of one core, and the total: e.g. the stack at rest.
    Cpu {
        /// How long to measure.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// The same as JSON (keys seconds, processes: [{process, pid, cpu_percent}], total_percent).
        #[arg(long)]
        json: bool,
    },
    /// Show a process's log and follow it (Ctrl-C to stop).
    Logs {
        /// The process (broker, redis, matcher, order-svc-1, …; `lab` for the supervisor's own).
        process: String,
        /// Print the last lines and return.
        #[arg(long)]
        no_follow: bool,
    },
    /// Everything CI runs: format, lint, docs, unit, rule, property, no-allocation and
    /// integration tests (real broker, Redis, nginx), benches once, a benchmark smoke run.
    Test,
    /// Build with the `perf` profile and run the book benchmark; flags go to book-bench
    /// (--commands N --symbols N --depth N --window N --runs N --seed N --no-peers --hgrm DIR).
    Bench {
        /// book-bench's flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        flags: Vec<String>,
    },
}

fn main() {
    let args = Args::parse();
    let result = match args.command {
        Cmd::Up { detach, no_restart, ports, supervise, no_sim, with_prometheus, matchers } => {
            commands::up(&Up {
                dir: args.run_dir,
                ports: match ports {
                    PortPlan::Fixed => Ports::Fixed,
                    PortPlan::Free => Ports::Free,
                },
                detach,
                no_restart,
                supervise,
                no_sim,
                with_prometheus,
                matchers: usize::from(matchers),
            })
        }
        Cmd::Role { user, role } => commands::role(&args.run_dir, &user, &role),
        Cmd::Down => commands::down(&args.run_dir),
        Cmd::Status { json } => commands::status(&args.run_dir, json),
        Cmd::Cpu { seconds, json } => stack::cpu::cpu(&args.run_dir, seconds, json),
        Cmd::Logs { process, no_follow } => commands::logs(&args.run_dir, &process, !no_follow),
        Cmd::Test => commands::test(),
        Cmd::Bench { flags } => commands::bench(&flags),
    };
    if let Err(e) = result {
        eprintln!("lab: {e:#}");
        std::process::exit(1);
    }
}
