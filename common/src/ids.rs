//! Identifiers: the deterministic exchange ids of DESIGN.md §2 and the small inline strings
//! (account, client order id) that travel with an order.
//!
//! The exchange order id is where a command landed in Kafka — `(partition, offset)` packed in a
//! `u64` — so a replay of the log gives every order, trade and event the same id again. JSON
//! carries these ids as strings: a `u64` does not survive a JavaScript number.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bits of an [`OrderId`] that hold the offset; the partition sits above them.
const OFFSET_BITS: u32 = 48;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

/// A command's position in the `orders` log, `(partition, offset)`; for a new order, its
/// exchange order id.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(pub u64);

impl OrderId {
    /// Packs a log position; `None` if the offset needs more than 48 bits.
    pub fn new(partition: u16, offset: u64) -> Option<OrderId> {
        (offset <= OFFSET_MASK).then_some(OrderId((u64::from(partition) << OFFSET_BITS) | offset))
    }

    /// The Kafka partition the command was written to.
    pub fn partition(self) -> u16 {
        (self.0 >> OFFSET_BITS) as u16
    }

    /// The command's offset inside its partition.
    pub fn offset(self) -> u64 {
        self.0 & OFFSET_MASK
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for OrderId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<OrderId, Self::Err> {
        s.parse().map(OrderId)
    }
}

impl Serialize for OrderId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OrderId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<OrderId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(|_| D::Error::custom("order id must be a decimal u64 string"))
    }
}

/// A trade: the command that caused it and the fill's index among that command's fills. Ordered as
/// the trades happened within a partition: by command (its log position), then fill index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TradeId {
    /// The taking command's log position.
    pub cmd: OrderId,
    /// 0 for its first fill, 1 for the next, …
    pub index: u32,
}

impl fmt::Display for TradeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.cmd, self.index)
    }
}

impl FromStr for TradeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<TradeId, IdError> {
        let (cmd, index) = s.split_once('-').ok_or(IdError::Syntax)?;
        Ok(TradeId {
            cmd: cmd.parse().map_err(|_| IdError::Syntax)?,
            index: index.parse().map_err(|_| IdError::Syntax)?,
        })
    }
}

impl Serialize for TradeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TradeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TradeId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(D::Error::custom)
    }
}

/// Dense index of a configured symbol: books live in a `Vec` at this index.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SymbolId(pub u32);

/// Longest account name or client order id, in bytes.
pub const MAX_ID_LEN: usize = 32;

/// Why an id string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty.
    #[error("must not be empty")]
    Empty,
    /// Longer than [`MAX_ID_LEN`] bytes.
    #[error("must be at most 32 characters")]
    TooLong,
    /// A character outside `A–Z a–z 0–9 . _ - ~`.
    #[error("may contain only A-Z a-z 0-9 . _ - ~")]
    BadChar,
    /// Not of the form the id needs.
    #[error("is not a valid id")]
    Syntax,
}

/// A character an id may hold (see [`ShortStr`]).
#[inline]
const fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~')
}

/// [`id_char`] by byte value: one load per character.
static ID_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = id_char(b as u8);
        b += 1;
    }
    table
};

/// An ASCII string of at most 32 bytes, stored inline so it is `Copy` and never allocates.
///
/// Only `A–Z a–z 0–9 . _ - ~`: safe inside Redis keys (`:` separates their parts) and URLs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortStr {
    /// How many bytes of `bytes` are used.
    len: u8,
    /// The characters, zero-padded.
    bytes: [u8; MAX_ID_LEN],
}

impl ShortStr {
    /// Validates and copies `s`.
    pub fn new(s: &str) -> Result<ShortStr, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        if !s.bytes().all(id_char) {
            return Err(IdError::BadChar);
        }
        let mut bytes = [0; MAX_ID_LEN];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(ShortStr { len: s.len() as u8, bytes })
    }

    /// The characters zero-padded to [`MAX_ID_LEN`] bytes: a fixed-size form for compact storage
    /// (no character is 0, so the first 0 ends the string). [`ShortStr::from_padded`] reads it back.
    #[inline]
    pub fn padded(&self) -> &[u8; MAX_ID_LEN] {
        &self.bytes
    }

    /// The string whose [`ShortStr::padded`] form is `bytes`: the characters before the first 0,
    /// validated as [`ShortStr::new`] does; every byte after them must be 0 too.
    pub fn from_padded(bytes: &[u8; MAX_ID_LEN]) -> Result<ShortStr, IdError> {
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(MAX_ID_LEN);
        if len == 0 {
            return Err(IdError::Empty);
        }
        // The bytes past `len` as two 128-bit halves, shifted (the book reads ids back this way
        // for every fill, so no byte loop here).
        let half = |at: usize| u128::from_le_bytes(bytes[at..at + 16].try_into().unwrap_or_default());
        let rest_zero = match len {
            MAX_ID_LEN => true,
            16.. => half(16) >> (8 * (len - 16)) == 0,
            _ => half(0) >> (8 * len) == 0 && half(16) == 0,
        };
        if !rest_zero {
            return Err(IdError::Syntax);
        }
        if !bytes[..len].iter().all(|&b| ID_CHARS[usize::from(b)]) {
            return Err(IdError::BadChar);
        }
        Ok(ShortStr { len: len as u8, bytes: *bytes })
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // Only ASCII was ever stored, so this cannot fail; fall back to "" rather than panic.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ShortStr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ShortStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ShortStr, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ShortStr::new(&text).map_err(D::Error::custom)
    }
}

/// Who owns an order. Until authentication exists it comes from the body; absent, it is
/// [`Account::anonymous`], shared by everyone and exempt from self-trade prevention.
pub type Account = ShortStr;

/// The client's own handle for an order (the original lab's `id`).
pub type ClientOrderId = ShortStr;

/// The shared account's name.
pub const ANONYMOUS: &str = "anonymous";

impl ShortStr {
    /// The shared `anonymous` account.
    pub fn anonymous() -> Account {
        // A constant that passes validation.
        ShortStr::new(ANONYMOUS).unwrap_or(ShortStr { len: 0, bytes: [0; MAX_ID_LEN] })
    }

    /// True for the shared `anonymous` account.
    pub fn is_anonymous(&self) -> bool {
        self.as_str() == ANONYMOUS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_pack_partition_and_offset() {
        let id = OrderId::new(3, 12345).unwrap();
        assert_eq!((id.partition(), id.offset()), (3, 12345));
        assert_eq!(OrderId::new(0, 1 << 48), None);
        let max = OrderId::new(u16::MAX, (1 << 48) - 1).unwrap();
        assert_eq!(max.0, u64::MAX);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{}\"", id.0));
        assert_eq!(serde_json::from_str::<OrderId>(&format!("\"{}\"", id.0)).unwrap(), id);
        assert!(serde_json::from_str::<OrderId>("\"-1\"").is_err());
        assert!(serde_json::from_str::<OrderId>("12").is_err(), "a number is not an id string");
    }

    #[test]
    fn trade_ids_round_trip() {
        let t = TradeId { cmd: OrderId(77), index: 2 };
        assert_eq!(t.to_string(), "77-2");
        assert_eq!("77-2".parse::<TradeId>(), Ok(t));
        for bad in ["77", "a-1", "77-", "-1", "77-1-2"] {
            assert_eq!(bad.parse::<TradeId>(), Err(IdError::Syntax), "{bad}");
        }
    }

    #[test]
    fn short_strings_validate() {
        assert_eq!(ShortStr::new("ui-123").unwrap().as_str(), "ui-123");
        assert_eq!(ShortStr::new(&"x".repeat(32)).unwrap().as_str().len(), 32);
        assert_eq!(ShortStr::new(""), Err(IdError::Empty));
        assert_eq!(ShortStr::new(&"x".repeat(33)), Err(IdError::TooLong));
        for bad in ["a b", "a:b", "é", "a\n", "a/b"] {
            assert_eq!(ShortStr::new(bad), Err(IdError::BadChar), "{bad:?}");
        }
        assert!(Account::anonymous().is_anonymous());
        assert!(!ShortStr::new("alice").unwrap().is_anonymous());
    }

    #[test]
    fn padded_form_round_trips_and_refuses_what_new_refuses() {
        for s in ["a", "ui-123", &"x".repeat(12), &"y".repeat(13), &"Z~._-9".repeat(6)[..32]] {
            let id = ShortStr::new(s).unwrap();
            assert_eq!(ShortStr::from_padded(id.padded()), Ok(id), "{s}");
        }
        let mut bytes = [0u8; MAX_ID_LEN];
        assert_eq!(ShortStr::from_padded(&bytes), Err(IdError::Empty));
        bytes[..3].copy_from_slice(b"a b");
        assert_eq!(ShortStr::from_padded(&bytes), Err(IdError::BadChar));
        bytes[..3].copy_from_slice(b"abc");
        bytes[5] = b'd';
        assert_eq!(ShortStr::from_padded(&bytes), Err(IdError::Syntax), "a character after the padding");
        for (len, stray) in [(3, 20), (15, 16), (16, 31), (20, 25)] {
            let mut bytes = *ShortStr::new(&"q".repeat(len)).unwrap().padded();
            bytes[stray] = b'q';
            assert_eq!(ShortStr::from_padded(&bytes), Err(IdError::Syntax), "{len} then one at {stray}");
        }
    }
}
