//! Stamping events: every event of a command gets the command's id and time, its index among
//! the command's events, and its symbol's next sequence number.

use common::{Event, EventKind, OrderId, SymbolId, Timestamp};

/// The events of one command, as they are produced.
pub struct Emitter<'a> {
    /// The command being applied.
    cmd: OrderId,
    /// Its time.
    ts: Timestamp,
    /// The next event's index within the command.
    index: u32,
    /// The next fill's index within the command (the trade id's second half).
    fills: u32,
    /// Where events go; the caller clears and reuses it, so steady state allocates nothing.
    out: &'a mut Vec<Event>,
}

impl<'a> Emitter<'a> {
    /// Starts the output of command `cmd`.
    pub fn new(cmd: OrderId, ts: Timestamp, out: &'a mut Vec<Event>) -> Emitter<'a> {
        Emitter { cmd, ts, index: 0, fills: 0, out }
    }

    /// The id of the command being applied.
    #[inline]
    pub fn cmd(&self) -> OrderId {
        self.cmd
    }

    /// Index for the next fill.
    #[inline]
    pub fn next_fill(&mut self) -> u32 {
        self.fills += 1;
        self.fills - 1
    }

    /// Emits an event that belongs to no symbol's sequence.
    #[inline]
    pub fn unsequenced(&mut self, kind: EventKind) {
        self.push(None, 0, kind);
    }

    #[inline]
    fn push(&mut self, symbol: Option<SymbolId>, seq: u64, kind: EventKind) {
        self.out.push(Event { cmd: self.cmd, index: self.index, symbol, seq, ts: self.ts, kind });
        self.index += 1;
    }
}

/// A symbol's event sequence.
#[derive(Debug)]
pub struct Tape {
    /// The symbol.
    pub symbol: SymbolId,
    /// The last sequence number used (0: none yet).
    pub seq: u64,
}

impl Tape {
    /// Emits the symbol's next event.
    #[inline]
    pub fn emit(&mut self, em: &mut Emitter<'_>, kind: EventKind) {
        self.seq += 1;
        em.push(Some(self.symbol), self.seq, kind);
    }
}
