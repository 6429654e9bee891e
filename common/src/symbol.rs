//! The symbol table: what trades, in what increments, inside which limits.
//!
//! Each symbol has a tick (price increment), a lot (quantity increment), a dynamic price band
//! around its reference price (the book's check) and static limits (the edge's checks: maximum
//! quantity and notional, an absolute price range). Symbols are addressed inside the engine by a
//! dense [`SymbolId`]; names stop at the edge.

use crate::decimal::{Decimal, DecimalError, FieldError};
use crate::ids::SymbolId;
use crate::num::{Price, Qty};

/// One tradable symbol's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolSpec {
    /// The public name (`ABC`).
    pub name: String,
    /// Price increment: prices are whole multiples of it.
    pub tick: Decimal,
    /// Quantity increment: quantities are whole multiples of it.
    pub lot: Decimal,
    /// Half-width of the dynamic band around the reference price, in basis points (0: no band).
    pub band_bps: u32,
    /// The reference price the band is centred on until the first trade moves it.
    pub reference: Price,
    /// Largest quantity one order may have (static, checked at the edge).
    pub max_qty: Qty,
    /// Largest price × quantity one order may have, in ticks × lots (static, at the edge).
    pub max_notional_ticks: i128,
    /// Lowest price accepted at all (static, at the edge).
    pub min_price: Price,
    /// Highest price accepted at all (static, at the edge).
    pub max_price: Price,
}

/// A static limit an order broke at the edge (HTTP 422).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// More than the symbol's maximum quantity.
    #[error("qty exceeds the maximum of {0} lots")]
    QtyTooLarge(u64),
    /// Price × quantity above the symbol's maximum notional.
    #[error("notional (price × qty) exceeds the symbol's maximum")]
    NotionalTooLarge,
    /// Outside the symbol's absolute price range.
    #[error("price is outside the symbol's range")]
    PriceOutOfRange,
}

impl SymbolSpec {
    /// A spec with the given increments and reference, and generous default limits.
    pub fn new(name: &str, tick: &str, lot: &str, reference: &str, band_bps: u32) -> SymbolSpec {
        let tick = Decimal::parse(tick).expect("tick is a decimal");
        let lot = Decimal::parse(lot).expect("lot is a decimal");
        let reference = Decimal::parse(reference)
            .expect("reference is a decimal")
            .units_of(tick)
            .expect("reference is on tick");
        SymbolSpec {
            name: name.to_owned(),
            tick,
            lot,
            band_bps,
            reference: Price(reference as i64),
            max_qty: Qty(1_000_000),
            max_notional_ticks: reference * 1_000_000,
            min_price: Price(1),
            max_price: Price(reference as i64 * 100),
        }
    }

    /// The price of a decimal, in ticks: positive, on tick, inside `i64`.
    pub fn price(&self, field: &'static str, value: Decimal) -> Result<Price, FieldError> {
        let ticks = value.units_of(self.tick).map_err(|e| FieldError::new(field, e))?;
        if ticks <= 0 {
            return Err(FieldError::new(field, DecimalError::NotPositive));
        }
        i64::try_from(ticks).map(Price).map_err(|_| FieldError::new(field, DecimalError::OutOfRange))
    }

    /// The quantity of a decimal, in lots: positive, on lot, inside `u64`.
    pub fn qty(&self, field: &'static str, value: Decimal) -> Result<Qty, FieldError> {
        let lots = value.units_of(self.lot).map_err(|e| FieldError::new(field, e))?;
        if lots <= 0 {
            return Err(FieldError::new(field, DecimalError::NotPositive));
        }
        u64::try_from(lots).map(Qty).map_err(|_| FieldError::new(field, DecimalError::OutOfRange))
    }

    /// A price in ticks as an exact decimal (`"100.05"`).
    pub fn price_decimal(&self, price: Price) -> Decimal {
        Decimal { mantissa: i128::from(price.0) * self.tick.mantissa, scale: self.tick.scale }
    }

    /// A quantity in lots as an exact decimal.
    pub fn qty_decimal(&self, qty: Qty) -> Decimal {
        Decimal { mantissa: i128::from(qty.0) * self.lot.mantissa, scale: self.lot.scale }
    }

    /// The static checks of the edge: quantity, notional, absolute price range.
    pub fn check_static(&self, price: Option<Price>, qty: Qty) -> Result<(), LimitError> {
        if qty > self.max_qty {
            return Err(LimitError::QtyTooLarge(self.max_qty.0));
        }
        if let Some(price) = price {
            if price < self.min_price || price > self.max_price {
                return Err(LimitError::PriceOutOfRange);
            }
            if price.notional(qty) > self.max_notional_ticks {
                return Err(LimitError::NotionalTooLarge);
            }
        }
        Ok(())
    }

    /// The band's half-width in ticks around `center` (0 when the symbol has no band).
    #[inline]
    pub fn band_ticks(&self, center: Price) -> i64 {
        (i128::from(center.0) * i128::from(self.band_bps) / 10_000) as i64
    }
}

/// All configured symbols, indexed densely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolTable {
    /// The specs; a symbol's [`SymbolId`] is its index here.
    specs: Vec<SymbolSpec>,
}

impl SymbolTable {
    /// A table of these specs, in this order. Names must be unique.
    pub fn new(specs: Vec<SymbolSpec>) -> SymbolTable {
        for (i, spec) in specs.iter().enumerate() {
            assert!(specs[..i].iter().all(|s| s.name != spec.name), "symbol {} configured twice", spec.name);
        }
        SymbolTable { specs }
    }

    /// The spec of a symbol.
    #[inline]
    pub fn get(&self, id: SymbolId) -> Option<&SymbolSpec> {
        self.specs.get(id.0 as usize)
    }

    /// A symbol's id by name.
    pub fn lookup(&self, name: &str) -> Option<SymbolId> {
        self.specs.iter().position(|s| s.name == name).map(|i| SymbolId(i as u32))
    }

    /// How many symbols there are.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Every symbol with its id, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (SymbolId, &SymbolSpec)> {
        self.specs.iter().enumerate().map(|(i, s)| (SymbolId(i as u32), s))
    }

    /// The names, comma-separated: what an "unknown symbol" error lists.
    pub fn names(&self) -> String {
        self.specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl Default for SymbolTable {
    /// `ABC` (the original lab's symbol), `DEF` and `XYZ`, each with a ±10 % band.
    fn default() -> SymbolTable {
        SymbolTable::new(vec![
            SymbolSpec::new("ABC", "0.01", "1", "100.00", 1_000),
            SymbolSpec::new("DEF", "0.05", "10", "50.00", 1_000),
            SymbolSpec::new("XYZ", "0.5", "1", "2500", 1_000),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn default_table_has_abc() {
        let table = SymbolTable::default();
        let abc = table.lookup("ABC").unwrap();
        assert_eq!(abc, SymbolId(0));
        assert_eq!(table.get(abc).unwrap().reference, Price(10_000));
        assert_eq!(table.lookup("abc"), None);
        assert_eq!(table.names(), "ABC, DEF, XYZ");
    }

    #[test]
    fn prices_and_quantities_convert_exactly_or_name_the_field() {
        let table = SymbolTable::default();
        let def = table.get(table.lookup("DEF").unwrap()).unwrap();
        assert_eq!(def.price("price", d("50.05")), Ok(Price(1001)));
        assert_eq!(
            def.price("price", d("50.01")),
            Err(FieldError::new("price", DecimalError::NotMultiple(d("0.05"))))
        );
        assert_eq!(def.price("price", d("0")), Err(FieldError::new("price", DecimalError::NotPositive)));
        assert_eq!(def.price("price", d("-5")), Err(FieldError::new("price", DecimalError::NotPositive)));
        assert_eq!(def.price("price", d("1e29")), Err(FieldError::new("price", DecimalError::OutOfRange)));
        assert_eq!(def.qty("qty", d("30")), Ok(Qty(3)));
        assert_eq!(def.qty("qty", d("35")), Err(FieldError::new("qty", DecimalError::NotMultiple(d("10")))));
        assert_eq!(def.qty("qty", d("0")), Err(FieldError::new("qty", DecimalError::NotPositive)));
        assert_eq!(def.price_decimal(Price(1001)).to_string(), "50.05");
        assert_eq!(def.qty_decimal(Qty(3)).to_string(), "30");
        let err = def.qty("qty", d("35")).unwrap_err();
        assert_eq!(err.to_string(), "qty is not a multiple of 10");
    }

    #[test]
    fn static_limits() {
        let table = SymbolTable::default();
        let abc = table.get(SymbolId(0)).unwrap();
        assert_eq!(abc.check_static(Some(Price(10_000)), Qty(5)), Ok(()));
        assert_eq!(abc.check_static(None, Qty(1_000_001)), Err(LimitError::QtyTooLarge(1_000_000)));
        assert_eq!(abc.check_static(Some(Price(0)), Qty(1)), Err(LimitError::PriceOutOfRange));
        assert_eq!(abc.check_static(Some(Price(1_000_001)), Qty(1)), Err(LimitError::PriceOutOfRange));
        assert_eq!(
            abc.check_static(Some(Price(1_000_000)), Qty(1_000_000)),
            Err(LimitError::NotionalTooLarge)
        );
        assert_eq!(abc.band_ticks(Price(10_000)), 1_000);
    }
}
