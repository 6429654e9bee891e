//! Trading Lab's native stack, described once and supervised (DESIGN.md §1, §7).
//!
//! `./lab` (the bootstrap: apt packages, the broker build, `cargo build`) hands over to this
//! crate's `lab` binary; the integration tests start their stacks through the same [`Plan`] and
//! [`Supervisor`]; `itest/tests/compose.rs` checks `docker-compose.yml` against the fixed plan.
//!
//! # Layout
//! - [`plan`]: the description: every process, its command line, probes, dependencies, ports
//!   (fixed for `lab up`, free for tests), the topics, Tansu's flags, nginx's template.
//! - [`supervisor`]: starts a plan in dependency order, waits for readiness, restarts with
//!   backoff, stops front to back, by process group.
//! - [`probe`]: TCP and HTTP readiness probes.
//! - [`topics`]: topic creation through the Kafka admin API.
//! - [`state`]: the state file `lab status` and `lab down` read.
//! - [`commands`]: `up`, `down`, `status`, `logs`, `test`, `bench`.
//! - [`cpu`]: `lab cpu`, each process's share of a core over a few seconds (the stack at rest).
//!
//! # Crates
//! Process groups come from `std` (`CommandExt::process_group`, stable since 1.64, no `unsafe`
//! `pre_exec` needed); `nix` sends a signal to a whole group (`killpg`), which `std` cannot;
//! `signal-hook` turns SIGINT/SIGTERM into a flag the supervisor's loop reads (no async runtime
//! in the supervisor); `backon`'s exponential builder yields the restart delays (capped,
//! doubling). A hand-written loop remains only where the work is ours: probing and ordering.
#![forbid(unsafe_code)]

pub mod commands;
pub mod cpu;
pub mod plan;
pub mod probe;
pub mod state;
pub mod supervisor;
pub mod topics;

pub use plan::{Kind, Options, Plan, Ports, Probe, Proc};
pub use supervisor::{Restart, Supervisor};
