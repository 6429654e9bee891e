//! The book thread: pinned to a core, it pops commands, applies them to the [`Engine`] and
//! pushes the events, then a `Done` marker, into the I/O thread's ring. No allocation, no logging,
//! no formatting here: only the rings, the book and a clock read per command (the `matched` hop).

use std::thread::Thread;

use common::{EventKind, Qty, SymbolTable};

use super::config::Config;
use super::metrics::Metrics;
use super::ring::{now_ns, push_wait, Hops, Idle, Input, Output, Stop};
use crate::engine::Engine;

/// Runs until `stop`.
pub fn run(
    config: &Config,
    table: &SymbolTable,
    mut input: rtrb::Consumer<Input>,
    mut output: rtrb::Producer<Output>,
    io: Thread,
    stop: &Stop,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    if let Some(core) = config.pin_core {
        let pinned = core_affinity::get_core_ids()
            .and_then(|ids| ids.into_iter().find(|c| c.id == core))
            .is_some_and(core_affinity::set_for_current);
        tracing::info!(core, pinned, "book thread");
    }
    let mut engine = Engine::new(table, config.capacity);
    let mut events = Vec::with_capacity(4096);
    let mut idle = Idle::new(config.spin);
    while !stop.stopped() {
        let Ok(item) = input.pop() else {
            // The consumer left (a drain) and everything it pushed is done: the I/O thread sees
            // this thread's ring abandoned in turn.
            if input.is_abandoned() && input.is_empty() {
                break;
            }
            idle.wait();
            continue;
        };
        idle.reset();
        let (id, replay, mut hops) = match item {
            Input::Cmd { cmd, replay, hops } => {
                events.clear();
                engine.apply(&cmd, &mut events);
                (cmd.id, replay, hops)
            }
            Input::CaughtUp => {
                push(&mut output, Output::CaughtUp, &io, stop, metrics);
                io.unpark();
                continue;
            }
            Input::Bad { id, reason, replay } => {
                events.clear();
                events.push(common::Event {
                    cmd: id,
                    index: 0,
                    symbol: None,
                    seq: 0,
                    ts: common::Timestamp(0),
                    kind: EventKind::Rejected {
                        order_id: id,
                        account: common::Account::anonymous(),
                        client_order_id: None,
                        reason,
                        qty: Qty::ZERO,
                    },
                });
                (id, replay, Hops::default())
            }
        };
        hops.matched = now_ns();
        metrics.commands.inc();
        for event in &events {
            if matches!(event.kind, EventKind::Fill { .. }) {
                metrics.trades.inc();
            }
            push(&mut output, Output::Event { event: *event, replay }, &io, stop, metrics);
        }
        push(&mut output, Output::Done { id, replay, hops }, &io, stop, metrics);
        io.unpark();
        metrics.ring_in.set(input.slots() as i64);
    }
    Ok(())
}

/// Pushes into the I/O ring, spinning while it is full (this thread is pinned: it does not yield).
#[inline]
fn push(ring: &mut rtrb::Producer<Output>, item: Output, io: &Thread, stop: &Stop, metrics: &Metrics) {
    push_wait(ring, item, io, std::hint::spin_loop, stop, &metrics.ring_full);
}
