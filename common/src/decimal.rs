//! Exact decimals for the JSON edge, and their conversion to ticks and lots.
//!
//! A [`Decimal`] is `mantissa × 10^-scale`, parsed from the text of a JSON number or string and
//! never through `f64`, so `100.05` stays `10005 × 10^-2`. Converting to ticks or lots divides by
//! the symbol's increment and refuses anything that does not divide exactly: prices are rejected,
//! never rounded.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Most significant digits accepted: keeps every intermediate inside `i128`.
const MAX_DIGITS: usize = 30;
/// Largest decimal exponent magnitude accepted (`1e12`, `5e-9`).
const MAX_EXPONENT: i32 = 30;

/// An exact decimal number: `mantissa × 10^-scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    /// The digits as an integer, sign included.
    pub mantissa: i128,
    /// How many of those digits are after the decimal point.
    pub scale: u32,
}

/// Why a decimal was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not a decimal number at all (`"abc"`, `"1.2.3"`, `"NaN"`, `true`).
    #[error("is not a decimal number")]
    Syntax,
    /// Too many digits or too large an exponent to be exact.
    #[error("has too many digits or is out of range")]
    OutOfRange,
    /// Negative where only positive values make sense.
    #[error("must be positive")]
    NotPositive,
    /// Not a whole number of the symbol's increment (tick or lot).
    #[error("is not a multiple of {0}")]
    NotMultiple(Decimal),
}

/// A decimal refused for a named field: the error the HTTP edge reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {error}")]
pub struct FieldError {
    /// The JSON field the value came from.
    pub field: &'static str,
    /// What was wrong with it.
    pub error: DecimalError,
}

impl FieldError {
    /// Wraps a decimal error with the field it came from.
    pub fn new(field: &'static str, error: DecimalError) -> FieldError {
        FieldError { field, error }
    }
}

fn pow10(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

impl Decimal {
    /// A whole number.
    pub const fn from_int(value: i64) -> Decimal {
        Decimal { mantissa: value as i128, scale: 0 }
    }

    /// Parses the text of a JSON number (`-12.5`, `1e3`, `0.01`) exactly.
    pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let negative = bytes.first() == Some(&b'-');
        if negative {
            i += 1;
        }
        let mut mantissa: i128 = 0;
        let mut digits = 0usize;
        let mut scale: i32 = 0;
        let mut seen_point = false;
        let mut seen_digit = false;
        while i < bytes.len() {
            match bytes[i] {
                b @ b'0'..=b'9' => {
                    seen_digit = true;
                    if digits > 0 || b != b'0' {
                        digits += 1;
                    }
                    if digits > MAX_DIGITS {
                        return Err(DecimalError::OutOfRange);
                    }
                    mantissa = mantissa * 10 + i128::from(b - b'0');
                    if seen_point {
                        scale += 1;
                    }
                }
                b'.' if !seen_point && seen_digit => seen_point = true,
                b'e' | b'E' if seen_digit => break,
                _ => return Err(DecimalError::Syntax),
            }
            i += 1;
        }
        if !seen_digit || bytes.last() == Some(&b'.') {
            return Err(DecimalError::Syntax);
        }
        if i < bytes.len() {
            // Exponent: [eE][+-]?digits
            let exp_text = &text[i + 1..];
            let exp_digits = exp_text.strip_prefix(['+', '-']).unwrap_or(exp_text);
            if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DecimalError::Syntax);
            }
            let exp: i32 = exp_text.parse().map_err(|_| DecimalError::OutOfRange)?;
            if exp.abs() > MAX_EXPONENT {
                return Err(DecimalError::OutOfRange);
            }
            scale -= exp;
        }
        if scale < 0 {
            let factor = pow10(scale.unsigned_abs()).ok_or(DecimalError::OutOfRange)?;
            mantissa = mantissa.checked_mul(factor).ok_or(DecimalError::OutOfRange)?;
            scale = 0;
        }
        if negative {
            mantissa = -mantissa;
        }
        Ok(Decimal { mantissa, scale: scale as u32 })
    }

    /// True when strictly greater than zero.
    pub fn is_positive(self) -> bool {
        self.mantissa > 0
    }

    /// Both numbers brought to the larger scale, so their mantissas compare and divide.
    fn aligned(self, other: Decimal) -> Option<(i128, i128)> {
        let scale = self.scale.max(other.scale);
        let a = self.mantissa.checked_mul(pow10(scale - self.scale)?)?;
        let b = other.mantissa.checked_mul(pow10(scale - other.scale)?)?;
        Some((a, b))
    }

    /// How many whole `increment`s make this number; refuses a remainder.
    pub fn units_of(self, increment: Decimal) -> Result<i128, DecimalError> {
        let (value, step) = self.aligned(increment).ok_or(DecimalError::OutOfRange)?;
        if step <= 0 {
            return Err(DecimalError::OutOfRange);
        }
        if value % step != 0 {
            return Err(DecimalError::NotMultiple(increment));
        }
        Ok(value / step)
    }

    /// `units × increment`, exactly, at the increment's scale.
    pub fn from_units(units: i128, increment: Decimal) -> Option<Decimal> {
        Some(Decimal { mantissa: units.checked_mul(increment.mantissa)?, scale: increment.scale })
    }

    /// True if the number has no fractional part.
    pub fn is_integral(self) -> bool {
        10i128.checked_pow(self.scale).is_some_and(|p| self.mantissa % p == 0)
    }

    /// The original lab's JSON number: an integer when whole (`5`), else a lossy float.
    pub fn to_lab_json(self) -> serde_json::Value {
        match 10i128.checked_pow(self.scale).map(|p| self.mantissa / p) {
            Some(whole) if self.is_integral() && i64::try_from(whole).is_ok() => {
                serde_json::Value::from(whole as i64)
            }
            _ => serde_json::Value::from(self.to_f64_lossy()),
        }
    }

    /// A lossy `f64` for display-only JSON numbers (the original lab's routes); never for arithmetic.
    pub fn to_f64_lossy(self) -> f64 {
        // Through the decimal text, so 100.05 prints as 100.05 and not 100.04999.
        self.to_string().parse().unwrap_or(f64::NAN)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

impl std::str::FromStr for Decimal {
    type Err = DecimalError;

    fn from_str(s: &str) -> Result<Decimal, DecimalError> {
        Decimal::parse(s)
    }
}

impl Serialize for Decimal {
    /// Always a JSON string: a decimal that survives any JSON reader.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    /// A JSON number or a JSON string holding one, read from its text (never through `f64`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Decimal::from_json_text(raw.get()).map_err(D::Error::custom)
    }
}

impl Decimal {
    /// Parses the raw JSON text of a value: a number, or a string holding one.
    pub fn from_json_text(raw: &str) -> Result<Decimal, DecimalError> {
        if raw.starts_with('"') {
            let inner: String = serde_json::from_str(raw).map_err(|_| DecimalError::Syntax)?;
            Decimal::parse(&inner)
        } else {
            Decimal::parse(raw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn parses_exactly() {
        let cases = [
            ("100", 100, 0),
            ("100.05", 10005, 2),
            ("-0.5", -5, 1),
            ("0.010", 10, 3),
            ("1e3", 1000, 0),
            ("1.5E-2", 15, 3),
            ("2e+2", 200, 0),
            ("000.1", 1, 1),
        ];
        for (text, mantissa, scale) in cases {
            assert_eq!(Decimal::parse(text), Ok(Decimal { mantissa, scale }), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_decimal() {
        for text in
            ["", "-", ".5", "5.", "1.2.3", "NaN", "inf", "+1", " 1", "1 ", "1e", "1e+", "0x10", "1,5", "--1"]
        {
            assert_eq!(Decimal::parse(text), Err(DecimalError::Syntax), "{text:?}");
        }
        for text in ["1e31", "1e-31", "1234567890123456789012345678901", "1e99999999999"] {
            assert_eq!(Decimal::parse(text), Err(DecimalError::OutOfRange), "{text:?}");
        }
    }

    #[test]
    fn converts_to_units_only_when_exact() {
        let tick = d("0.01");
        assert_eq!(d("100").units_of(tick), Ok(10000));
        assert_eq!(d("100.05").units_of(tick), Ok(10005));
        assert_eq!(d("100.050").units_of(tick), Ok(10005));
        assert_eq!(d("100.005").units_of(tick), Err(DecimalError::NotMultiple(tick)));
        assert_eq!(d("7").units_of(d("5")), Err(DecimalError::NotMultiple(d("5"))));
        assert_eq!(d("0.15").units_of(d("0.05")), Ok(3));
        assert_eq!(d("1").units_of(d("0")), Err(DecimalError::OutOfRange));
    }

    #[test]
    fn formats_at_the_increment_scale() {
        let tick = d("0.01");
        assert_eq!(Decimal::from_units(10000, tick).unwrap().to_string(), "100.00");
        assert_eq!(Decimal::from_units(5, tick).unwrap().to_string(), "0.05");
        assert_eq!(Decimal::from_units(-5, tick).unwrap().to_string(), "-0.05");
        assert_eq!(Decimal::from_units(7, d("1")).unwrap().to_string(), "7");
        assert_eq!(d("100.05").to_f64_lossy(), 100.05);
        assert_eq!(d("5").to_lab_json(), serde_json::json!(5));
        assert_eq!(d("5.00").to_lab_json(), serde_json::json!(5));
        assert_eq!(d("2.5").to_lab_json(), serde_json::json!(2.5));
    }

    #[test]
    fn json_numbers_and_strings_read_the_same() {
        let a: Decimal = serde_json::from_str("100.05").unwrap();
        let b: Decimal = serde_json::from_str("\"100.05\"").unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"100.05\"");
        // Digits f64 would lose are kept.
        let c: Decimal = serde_json::from_str("0.30000000000000004").unwrap();
        assert_eq!(c, Decimal { mantissa: 30000000000000004, scale: 17 });
        for bad in ["true", "null", "{}", "[]", "\"abc\"", "\"\""] {
            assert!(serde_json::from_str::<Decimal>(bad).is_err(), "{bad}");
        }
    }
}
