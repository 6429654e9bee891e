//! The engine: every book this matcher holds, behind one `apply(command) -> events`.
//!
//! Books sit in a `Vec` at their dense [`SymbolId`]; one index maps each resting order's exchange
//! id to its book and slot, so a cancel finds its order in O(1) from the id alone (a cancel names
//! no symbol: the id encodes only the partition). A book alone in its engine needs no symbol to
//! be named: most of its orders rest at a slot their id addresses ([`crate::slab`]'s homes), where
//! a cancel reads the order straight from its id, and the index holds only the rest.

use std::collections::HashSet;

use common::{
    Account, Command, CommandKind, Event, EventKind, OrderId, Qty, RejectReason, SymbolId, SymbolTable,
};

use crate::book::{Book, Capacity, Loc, OrderIndex, RestingOrder};
use crate::emit::Emitter;
use crate::snapshot::{BookImage, SnapshotError};

/// All books of one matcher.
#[derive(Debug)]
pub struct Engine {
    /// One book per configured symbol, at its symbol index.
    books: Vec<Book>,
    /// Resting order id → (book, slot), for every order not at its home (with several books, every
    /// order).
    index: OrderIndex,
    /// What each book reserves: a restored book is built with it too.
    capacity: Capacity,
}

impl Engine {
    /// Empty books for every symbol of `table`, each with room for `capacity`.
    pub fn new(table: &SymbolTable, capacity: Capacity) -> Engine {
        let mut books: Vec<Book> = table.iter().map(|(id, spec)| Book::new(id, spec, capacity)).collect();
        // A book alone finds its orders by id: the index holds only those not at their homes,
        // a few per cent of them (2.4 % at the end of the static regime), so it is made small
        // enough to stay in the cache; it grows if they are more.
        let index = if let [book] = &mut books[..] {
            book.find_by_id();
            OrderIndex::with_capacity(capacity.orders / 16)
        } else {
            OrderIndex::with_capacity(capacity.orders * books.len())
        };
        Engine { books, index, capacity }
    }

    /// Applies one command, appending its events to `out` (which the caller clears and reuses).
    pub fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        let mut em = Emitter::new(cmd.id, cmd.ts, out);
        let index = &mut self.index;
        // By reference: a command is ~100 bytes, not worth copying onto the stack.
        match &cmd.kind {
            CommandKind::New(o) => match self.books.get_mut(o.symbol.0 as usize) {
                Some(book) => book.new_order(cmd.id, o, index, &mut em),
                None => em.unsequenced(EventKind::Rejected {
                    order_id: cmd.id,
                    account: o.account,
                    client_order_id: Some(o.client_order_id),
                    reason: RejectReason::UnknownSymbol,
                    qty: o.qty,
                }),
            },
            CommandKind::Cancel(c) => match locate(&self.books, index, c.order_id) {
                Some(loc) => self.books[loc.symbol as usize].cancel(loc.slot, c.account, index, &mut em),
                None => unknown(&mut em, c.order_id, c.account, RejectReason::UnknownOrder),
            },
            CommandKind::Replace(r) => {
                let loc = locate(&self.books, index, r.order_id).filter(|loc| loc.symbol == r.symbol.0);
                match (loc, self.books.get_mut(r.symbol.0 as usize)) {
                    (Some(loc), Some(book)) => book.replace(loc.slot, r, index, &mut em),
                    (None, Some(_)) => unknown(&mut em, r.order_id, r.account, RejectReason::UnknownOrder),
                    (_, None) => unknown(&mut em, r.order_id, r.account, RejectReason::UnknownSymbol),
                }
            }
            CommandKind::Halt { symbol } | CommandKind::Resume { symbol } => {
                let halted = matches!(cmd.kind, CommandKind::Halt { .. });
                match self.books.get_mut(symbol.0 as usize) {
                    Some(book) => book.set_halted(halted, &mut em),
                    None => unknown(&mut em, cmd.id, Account::anonymous(), RejectReason::UnknownSymbol),
                }
            }
            CommandKind::SetReference { symbol, price } => match self.books.get_mut(symbol.0 as usize) {
                Some(book) => book.set_reference(*price, &mut em),
                None => unknown(&mut em, cmd.id, Account::anonymous(), RejectReason::UnknownSymbol),
            },
            &CommandKind::MassCancel { account } => {
                // Produced to every partition: each copy cancels the orders that came in on its
                // own, so the outcome does not depend on how partitions interleave (a replay, a
                // partition that moved to another matcher).
                for book in &mut self.books {
                    book.mass_cancel(account, cmd.id.partition(), index, &mut em);
                }
            }
        }
    }

    /// The book of a symbol.
    pub fn book(&self, symbol: SymbolId) -> Option<&Book> {
        self.books.get(symbol.0 as usize)
    }

    /// All books, in symbol order.
    pub fn books(&self) -> &[Book] {
        &self.books
    }

    /// A resting order by exchange id.
    pub fn order(&self, id: OrderId) -> Option<(SymbolId, RestingOrder)> {
        let loc = locate(&self.books, &self.index, id)?;
        Some((SymbolId(loc.symbol), self.books[loc.symbol as usize].resting(loc.slot)))
    }

    /// Number of resting orders in all books.
    pub fn resting_orders(&self) -> usize {
        self.books.iter().map(Book::len).sum()
    }

    /// Replaces the book of `image.symbol` with one rebuilt from `image` (orders inserted
    /// directly: no matching, no events) and moves the order index over to it. The symbol's
    /// configuration (band width) and the engine's capacity stay the running ones; everything the
    /// image holds is the book's state ([`crate::snapshot`]).
    ///
    /// `Err`, with the engine unchanged, if the image is inconsistent ([`BookImage::check`]), its
    /// symbol is unknown here or named differently, its window exceeds the configured one, or one
    /// of its orders rests in another book.
    pub fn restore(&mut self, image: &BookImage) -> Result<(), SnapshotError> {
        self.restore_all([image])
    }

    /// [`Engine::restore`] for several books at once, all or nothing: on `Err` no book changed.
    /// A symbol may appear once, and an order id in one image only.
    pub fn restore_all<'a>(
        &mut self,
        images: impl IntoIterator<Item = &'a BookImage>,
    ) -> Result<(), SnapshotError> {
        let images: Vec<&BookImage> = images.into_iter().collect();
        let mut symbols = HashSet::with_capacity(images.len());
        for image in &images {
            if self.books.get(image.symbol.0 as usize).is_none() {
                let n = self.books.len();
                return Err(SnapshotError::Invalid(format!("unknown symbol {} ({n} here)", image.symbol.0)));
            }
            if !symbols.insert(image.symbol.0) {
                return Err(SnapshotError::Invalid(format!("symbol {} given twice", image.symbol.0)));
            }
        }
        // Build every book before touching anything, checking ids against the other books.
        let mut built = Vec::with_capacity(images.len());
        let mut ids = HashSet::new();
        for image in &images {
            let book = self.books[image.symbol.0 as usize].restored(image, self.capacity)?;
            for (id, _) in book.slots() {
                if self.index.get(&id).is_some_and(|loc| !symbols.contains(&loc.symbol)) {
                    return Err(SnapshotError::Invalid(format!("order {} rests in another book", id.0)));
                }
                if !ids.insert(id) {
                    return Err(SnapshotError::Invalid(format!("order {} is in two images", id.0)));
                }
            }
            built.push(book);
        }
        // All old entries out before any new one goes in: a restored order may carry the id of
        // an order that rested in another restored book.
        for book in &built {
            for (id, _) in self.books[book.symbol().0 as usize].slots() {
                self.index.remove(&id);
            }
        }
        for book in built {
            book.index_into(&mut self.index);
            let symbol = book.symbol().0 as usize;
            self.books[symbol] = book;
        }
        Ok(())
    }

    /// Checks every book's invariants and the index. For tests.
    pub fn validate(&self) -> Result<(), String> {
        for book in &self.books {
            book.validate(&self.index)?;
        }
        let indexed: usize =
            self.books.iter().map(|b| b.slots().iter().filter(|&&(_, s)| b.indexed(s)).count()).sum();
        if indexed != self.index.len() {
            return Err(format!("{indexed} orders not at their homes, {} index entries", self.index.len()));
        }
        Ok(())
    }
}

/// Where order `id` rests: at its home in a book alone in its engine, else through the index.
#[inline]
fn locate(books: &[Book], index: &OrderIndex, id: OrderId) -> Option<Loc> {
    if let [book] = books {
        if let Some(slot) = book.find(id) {
            return Some(Loc { symbol: book.symbol().0, slot });
        }
    }
    index.get(&id)
}

/// Rejects a command whose symbol or order is not known here: no symbol, so no sequence number.
fn unknown(em: &mut Emitter<'_>, order_id: OrderId, account: Account, reason: RejectReason) {
    em.unsequenced(EventKind::Rejected { order_id, account, client_order_id: None, reason, qty: Qty::ZERO });
}
