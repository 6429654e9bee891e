//! Per-book account interning: a resting order carries its owner as a `u32`, so self-trade
//! prevention and ownership checks compare one word, exactly, without touching strings.
//!
//! Ids are given in order of first acceptance in this book, so a replay gives the same ones; they
//! never leave the book (events carry the account itself). The table grows when an account is seen
//! for the first time, which steady state does not do.
//!
//! Every new order looks its account up, so the table is the book's own: ids in an open-addressed
//! array of `u32`, probed from a multiplicative hash of the name's four words, the name compared
//! only where an id sits. It replaced an `FxHashMap<Account, AccountId>` (the name hashed word by
//! word and mixed, then SwissTable's group probe), about 3 % of the static regime's time in the same
//! process (README, Speed, *Accounts in a table of their own*).

use common::Account;

/// An interned account; [`ANONYMOUS`] is the shared account.
pub type AccountId = u32;

/// The shared `anonymous` account's id: exempt from self-trade prevention.
pub const ANONYMOUS: AccountId = 0;

/// "No account" in a slot of the table.
const EMPTY: u32 = u32::MAX;

/// Accounts seen by one book.
#[derive(Debug)]
pub struct Accounts {
    /// Account ids by their name's hash: open addressing, linear probing, at most half full; a
    /// power of two long. Probing reads ids (4 bytes each) and compares the name behind one only
    /// when it is there.
    slots: Vec<AccountId>,
    /// Id → account.
    names: Vec<Account>,
}

/// Where an account's probe run starts in a table of `mask + 1` slots (a power of two): its 32
/// bytes as four words, rotated apart and folded into one, multiplied by 2^64/φ, the top bits
/// (Fibonacci hashing: names that differ in any byte land apart).
#[inline]
fn home(account: &Account, mask: usize) -> usize {
    let word = |i: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&account.padded()[8 * i..8 * i + 8]);
        u64::from_le_bytes(w)
    };
    let h = (word(0) ^ word(1).rotate_left(16) ^ word(2).rotate_left(32) ^ word(3).rotate_left(48))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - (mask + 1).trailing_zeros())) as usize
}

impl Accounts {
    /// A table with room for `capacity` accounts, holding `anonymous` as [`ANONYMOUS`].
    pub fn with_capacity(capacity: usize) -> Accounts {
        let size = (capacity.max(4) * 2).next_power_of_two();
        let mut accounts = Accounts { slots: vec![EMPTY; size], names: Vec::with_capacity(capacity) };
        accounts.intern(&Account::anonymous());
        accounts
    }

    /// The slot holding `account`, or the empty one ending its probe run.
    #[inline(always)]
    fn probe(&self, account: &Account) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = home(account, mask);
        loop {
            match self.slots[i] {
                EMPTY => return Err(i),
                id if self.names[id as usize] == *account => return Ok(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The account's id, given one if it has none yet.
    #[inline]
    pub fn intern(&mut self, account: &Account) -> AccountId {
        match self.probe(account) {
            Ok(i) => self.slots[i],
            Err(i) => {
                let id = self.names.len() as AccountId;
                self.names.push(*account);
                self.slots[i] = id;
                if 2 * self.names.len() > self.slots.len() {
                    self.grow();
                }
                id
            }
        }
    }

    /// Doubles the table and enters every account again (names are distinct: each probe ends at
    /// the empty slot where it goes).
    #[cold]
    fn grow(&mut self) {
        self.slots = vec![EMPTY; 2 * self.slots.len()];
        for id in 0..self.names.len() {
            let (Ok(i) | Err(i)) = self.probe(&self.names[id]);
            self.slots[i] = id as AccountId;
        }
    }

    /// The account's id, if it ever had an order accepted here.
    #[inline(always)] // Every new order: README, Speed, *Calls that cost*.
    pub fn find(&self, account: &Account) -> Option<AccountId> {
        self.probe(account).ok().map(|i| self.slots[i])
    }

    /// The account behind an id.
    #[inline]
    pub fn name(&self, id: AccountId) -> Account {
        self.names[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_accounts_keep_their_ids_as_the_table_grows() {
        let mut a = Accounts::with_capacity(4);
        // Names alike but for one byte, at every position: each word of the hash gets its turn.
        let names: Vec<Account> = (0..1000)
            .map(|i| {
                let mut s = vec![b'a'; 32];
                s[i % 32] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i / 32];
                Account::new(std::str::from_utf8(&s).unwrap()).unwrap()
            })
            .collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(a.find(name), None);
            assert_eq!(a.intern(name), i as AccountId + 1);
        }
        assert!(a.slots.len() >= 2 * a.names.len(), "at most half full");
        for (i, name) in names.iter().enumerate() {
            assert_eq!(a.find(name), Some(i as AccountId + 1));
            assert_eq!(a.name(i as AccountId + 1), *name);
        }
        assert_eq!(a.find(&Account::new("b").unwrap()), None);
        assert_eq!(a.find(&Account::anonymous()), Some(ANONYMOUS));
    }

    #[test]
    fn ids_are_stable_and_anonymous_is_zero() {
        let mut a = Accounts::with_capacity(4);
        let alice = Account::new("alice").unwrap();
        assert_eq!(a.find(&Account::anonymous()), Some(ANONYMOUS));
        assert_eq!(a.find(&alice), None);
        let id = a.intern(&alice);
        assert_eq!((id, a.intern(&alice), a.find(&alice)), (1, 1, Some(1)));
        assert_eq!(a.name(id), alice);
    }
}
