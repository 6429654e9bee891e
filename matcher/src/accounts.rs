//! Per-book account interning: a resting order carries its owner as a `u32`, so self-trade
//! prevention and ownership checks compare one word, exactly, without touching strings.
//!
//! Ids are given in order of first acceptance in this book, so a replay gives the same ones; they
//! never leave the book (events carry the account itself). The table grows when an account is seen
//! for the first time, which steady state does not do.

use common::Account;
use rustc_hash::FxHashMap;

/// An interned account; [`ANONYMOUS`] is the shared account.
pub type AccountId = u32;

/// The shared `anonymous` account's id: exempt from self-trade prevention.
pub const ANONYMOUS: AccountId = 0;

/// Accounts seen by one book.
#[derive(Debug)]
pub struct Accounts {
    /// Account → id.
    ids: FxHashMap<Account, AccountId>,
    /// Id → account.
    names: Vec<Account>,
}

impl Accounts {
    /// A table with room for `capacity` accounts, holding `anonymous` as [`ANONYMOUS`].
    pub fn with_capacity(capacity: usize) -> Accounts {
        let mut accounts = Accounts {
            ids: FxHashMap::with_capacity_and_hasher(capacity, Default::default()),
            names: Vec::with_capacity(capacity),
        };
        accounts.intern(&Account::anonymous());
        accounts
    }

    /// The account's id, given one if it has none yet.
    #[inline]
    pub fn intern(&mut self, account: &Account) -> AccountId {
        if let Some(&id) = self.ids.get(account) {
            return id;
        }
        let id = self.names.len() as AccountId;
        self.names.push(*account);
        self.ids.insert(*account, id);
        id
    }

    /// The account's id, if it ever had an order accepted here.
    #[inline]
    pub fn find(&self, account: &Account) -> Option<AccountId> {
        self.ids.get(account).copied()
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
