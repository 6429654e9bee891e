//! Resting orders in one pre-sized `Vec`, addressed by `u32` slot, linked into their price
//! level's FIFO queue by intrusive `prev`/`next` slots. Freed slots are reused, so a book in
//! steady state allocates nothing.
//!
//! A slab made [`Slab::with_homes`] also has a region of slots addressed by order id: an order
//! rests at its id's home slot when that is free, and a cancel reads its node straight from its
//! id ([`Slab::find`]) instead of asking the order index first and the node second. Order ids are
//! log offsets, so consecutive orders take consecutive homes, and a home is wanted again only
//! `4 × capacity` commands later; an order whose home is still taken by then rests in a slot from
//! the free list, and the engine's order index finds it (README, Speed, *Orders found by id*).

use common::{OrderId, Price, Qty, Side};

use crate::accounts::{AccountId, ANONYMOUS};
use crate::clients::Handle;

/// "No slot": the end of a queue.
pub const NIL: u32 = u32::MAX;

/// A free slot's contents: no open quantity (a resting order always has some).
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
    /// Free slots past the homes, reused last-freed first.
    free: Vec<u32>,
    /// Slots below this are homes (0: none); a power of two.
    homes: u32,
    /// Live orders.
    live: usize,
}

impl Slab {
    /// A slab that holds `capacity` orders before it first grows. Every slot is written now, so
    /// the memory is faulted in at start-up rather than on the hot path.
    pub fn with_capacity(capacity: usize) -> Slab {
        Slab::made(capacity, 0)
    }

    /// [`Slab::with_capacity`] plus `4 × capacity` home slots (rounded up to a power of two),
    /// addressed by order id; written now as well (48 bytes a slot).
    pub fn with_homes(capacity: usize) -> Slab {
        let homes = capacity.max(1).saturating_mul(4).next_power_of_two().min(1 << 30);
        Slab::made(capacity, homes as u32)
    }

    fn made(capacity: usize, homes: u32) -> Slab {
        let capacity = capacity.min((NIL - homes) as usize);
        // Lowest slots first: pop() takes from the end.
        let free = (homes..homes + capacity as u32).rev().collect();
        Slab { nodes: vec![VACANT; homes as usize + capacity], free, homes, live: 0 }
    }

    /// Slots past the homes: how many orders it holds before it first grows, whatever their ids.
    pub fn capacity(&self) -> usize {
        self.nodes.len() - self.homes as usize
    }

    /// True if this slab has homes.
    pub fn has_homes(&self) -> bool {
        self.homes != 0
    }

    /// The home of order `id`: its offset, shifted by a per-partition start so that partitions
    /// read side by side use different arcs. Only for a slab with homes.
    #[inline]
    fn home(&self, id: OrderId) -> u32 {
        let start = u64::from(id.partition()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (id.offset().wrapping_add(start) & u64::from(self.homes - 1)) as u32
    }

    /// True if `slot` is a home: the order in it is found by its id, not through the index.
    #[inline]
    pub fn at_home(&self, slot: u32) -> bool {
        slot < self.homes
    }

    /// The slot of order `id` if it rests at its home.
    #[inline]
    pub fn find(&self, id: OrderId) -> Option<u32> {
        if self.homes == 0 {
            return None;
        }
        let slot = self.home(id);
        let node = &self.nodes[slot as usize];
        (node.id == id && !node.leaves.is_zero()).then_some(slot)
    }

    /// Stores a node, returning its slot: its home if free.
    #[inline]
    pub fn insert(&mut self, node: Node) -> u32 {
        let slot = self.alloc_for(node.id);
        self.nodes[slot as usize] = node;
        slot
    }

    /// Takes a slot for order `id`, whose node the caller writes next (`slab[slot] = Node { … }`):
    /// its home if the slab has homes and that one is free, else a free slot. The fields go
    /// straight into the slot (a node passed by value was built on the stack and copied, and the
    /// copy's wide loads stalled on its fields' narrow stores).
    #[inline(always)]
    pub fn alloc_for(&mut self, id: OrderId) -> u32 {
        if self.homes != 0 {
            let slot = self.home(id);
            if self.nodes[slot as usize].leaves.is_zero() {
                self.live += 1;
                return slot;
            }
        }
        self.alloc()
    }

    /// A slot from the free list (past the homes).
    #[inline(always)]
    fn alloc(&mut self) -> u32 {
        self.live += 1;
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

    /// Gives a slot back: its node reads as free from now on (no open quantity).
    #[inline]
    pub fn remove(&mut self, slot: u32) {
        self.live -= 1;
        self.nodes[slot as usize].leaves = Qty::ZERO;
        if slot >= self.homes {
            self.free.push(slot);
        }
    }

    /// Number of live orders.
    pub fn len(&self) -> usize {
        self.live
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64) -> Node {
        Node { id: OrderId(id), leaves: Qty(1), ..VACANT }
    }

    #[test]
    fn orders_rest_at_their_homes_when_free_and_are_found_there() {
        let mut slab = Slab::with_homes(2);
        assert_eq!((slab.capacity(), slab.has_homes()), (2, true));
        // 8 homes: ids 3 and 11 share one, and partition 1's ids start elsewhere.
        let a = slab.insert(node(3));
        let b = slab.insert(node(11));
        assert!(slab.at_home(a) && !slab.at_home(b), "11's home was taken");
        assert_eq!((slab.find(OrderId(3)), slab.find(OrderId(11))), (Some(a), None));
        let other = OrderId::new(1, 3).unwrap();
        assert_ne!(slab.home(other), a, "another partition's offset 3 lives elsewhere");
        assert_eq!(slab.len(), 2);
        slab.remove(a);
        assert_eq!((slab.find(OrderId(3)), slab.len()), (None, 1), "an ended order is not found");
        assert_eq!(slab.free.len(), 1, "a home is not a free-list slot");
        assert_eq!(slab.insert(node(19)), a, "the home is free again");
        slab.remove(b);
        assert_eq!(slab.free.len(), 2);
    }

    #[test]
    fn a_slab_without_homes_finds_nothing_by_id() {
        let mut slab = Slab::with_capacity(2);
        let a = slab.insert(node(0));
        assert!(!slab.has_homes() && !slab.at_home(a));
        assert_eq!(slab.find(OrderId(0)), None);
    }
}
