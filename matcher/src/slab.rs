//! Resting orders in one pre-sized `Vec`, addressed by `u32` slot, linked into their price
//! level's FIFO queue by intrusive `prev`/`next` slots. Freed slots are reused, so a book in
//! steady state allocates nothing.

use common::{OrderId, Price, Qty, Side};

use crate::accounts::{AccountId, ANONYMOUS};
use crate::clients::Handle;

/// "No slot": the end of a queue.
pub const NIL: u32 = u32::MAX;

/// A free slot's contents (never read).
const VACANT: Node = Node {
    id: OrderId(0),
    price: Price(0),
    leaves: Qty::ZERO,
    account: ANONYMOUS,
    client: Handle { slot: NIL, fingerprint: 0 },
    prev: NIL,
    next: NIL,
    side: Side::Buy,
    post_only: false,
};

/// One resting order.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    /// Its exchange id.
    pub id: OrderId,
    /// Its limit price.
    pub price: Price,
    /// Its open quantity.
    pub leaves: Qty,
    /// Its owner, interned by the book ([`crate::accounts`]).
    pub account: AccountId,
    /// Its (account, client order id) in the book's [`crate::clients::ClientIds`]: where the
    /// strings live (kept out of the node so it fits one cache line), released when it ends.
    pub client: Handle,
    /// The order ahead of it at its level, or [`NIL`].
    pub prev: u32,
    /// The order behind it at its level, or [`NIL`].
    pub next: u32,
    /// Which ladder it rests on.
    pub side: Side,
    /// Post-only: a replace that would cross is refused.
    pub post_only: bool,
}

/// The order store of one book.
#[derive(Debug)]
pub struct Slab {
    /// Slots, live or free.
    nodes: Vec<Node>,
    /// Free slots, reused last-freed first.
    free: Vec<u32>,
}

impl Slab {
    /// A slab that holds `capacity` orders before it first grows. Every slot is written now, so
    /// the memory is faulted in at start-up rather than on the hot path.
    pub fn with_capacity(capacity: usize) -> Slab {
        let capacity = capacity.min(NIL as usize);
        // Lowest slots first: pop() takes from the end.
        let free = (0..capacity as u32).rev().collect();
        Slab { nodes: vec![VACANT; capacity], free }
    }

    /// Stores a node, returning its slot.
    #[inline]
    pub fn insert(&mut self, node: Node) -> u32 {
        let slot = self.alloc();
        self.nodes[slot as usize] = node;
        slot
    }

    /// Takes a slot for a node the caller writes next (`slab[slot] = Node { … }`): the fields go
    /// straight into the slot (a node passed by value was built on the stack and copied, and the
    /// copy's wide loads stalled on its fields' narrow stores).
    #[inline(always)]
    pub fn alloc(&mut self) -> u32 {
        match self.free.pop() {
            Some(slot) => slot,
            None => self.grow(),
        }
    }

    /// [`Slab::alloc`] past the capacity: out of line, the hot path only branches here.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) -> u32 {
        assert!(self.nodes.len() < NIL as usize, "more than 2^32 - 1 resting orders in one book");
        self.nodes.push(VACANT);
        (self.nodes.len() - 1) as u32
    }

    /// Gives a slot back.
    #[inline]
    pub fn remove(&mut self, slot: u32) {
        self.free.push(slot);
    }

    /// Number of live orders (slots written minus slots free).
    pub fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// True when no order is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::ops::Index<u32> for Slab {
    type Output = Node;

    #[inline]
    fn index(&self, slot: u32) -> &Node {
        &self.nodes[slot as usize]
    }
}

impl std::ops::IndexMut<u32> for Slab {
    #[inline]
    fn index_mut(&mut self, slot: u32) -> &mut Node {
        &mut self.nodes[slot as usize]
    }
}
