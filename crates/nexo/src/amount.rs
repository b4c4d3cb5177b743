//! Amounts: decimal numbers in major units in the JSON (`12.5` euros),
//! minor units (`1250` cents) everywhere else in posnet.
//!
//! Conversion is exact. A JSON number is never read as a float: the
//! amount's own text is taken from the parser (serde_json's `raw_value`,
//! which hands over a value's exact source text) and read as a decimal
//! (`rust_decimal`), so `0.1 + 0.2`-style rounding cannot happen and an
//! amount with more decimals than its currency has is refused, not
//! rounded. `raw_value` was chosen over serde_json's
//! `arbitrary_precision` because the latter changes how every
//! `serde_json::Number` in the whole build behaves, for all crates that
//! share the dependency; `raw_value` only adds a type.
//!
//! Consequence: [`Amount`] deserializes from JSON text (`serde_json::from_str`,
//! `from_slice`, `from_reader`), not from an already parsed
//! `serde_json::Value`.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// An amount could not be read or converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The JSON value is not a number.
    #[error("amount {0} is not a JSON number")]
    NotANumber(String),
    /// The number is negative; nexo amounts never are.
    #[error("amount {0} is negative")]
    Negative(String),
    /// The number has more digits or decimals than a decimal holds (28).
    #[error("amount {0} has more digits than can be represented exactly")]
    Precision(String),
    /// The currency is not an ISO 4217 code with a number of decimals.
    #[error("currency {0:?} is not an ISO 4217 currency with minor units")]
    UnknownCurrency(String),
    /// The amount has more decimals than its currency.
    #[error("amount {amount} has more decimals than {currency} ({exponent})")]
    TooManyDecimals {
        /// The amount as received.
        amount: String,
        /// The currency.
        currency: String,
        /// The currency's number of decimals.
        exponent: u8,
    },
    /// The amount in minor units does not fit in 64 bits.
    #[error("amount {0} is too large")]
    TooLarge(String),
}

/// The number of decimals (ISO 4217 minor-unit exponent) of an alphabetic
/// currency code: 2 for `EUR`, 0 for `JPY`, 3 for `KWD`. Codes without
/// minor units (precious metals, `XXX`) are refused.
pub fn currency_exponent(currency: &str) -> Result<u8, AmountError> {
    iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .and_then(|e| u8::try_from(e).ok())
        .ok_or_else(|| AmountError::UnknownCurrency(currency.to_owned()))
}

/// A non-negative decimal amount in major units, held exactly.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Amount(Decimal);

impl Amount {
    /// Zero.
    pub const ZERO: Self = Self(Decimal::ZERO);

    /// The amount of `minor` minor units of `currency` (`1250` EUR → 12.5).
    pub fn from_minor(minor: u64, currency: &str) -> Result<Self, AmountError> {
        let exponent = currency_exponent(currency)?;
        Ok(Self(
            Decimal::from_i128_with_scale(i128::from(minor), u32::from(exponent)).normalize(),
        ))
    }

    /// This amount in minor units of `currency`. Refuses an amount with
    /// more decimals than the currency has (`12.505` EUR, `1.5` JPY).
    pub fn to_minor(&self, currency: &str) -> Result<u64, AmountError> {
        let exponent = currency_exponent(currency)?;
        let scaled = self
            .0
            .checked_mul(Decimal::from(10u64.pow(u32::from(exponent))))
            .ok_or_else(|| AmountError::TooLarge(self.to_string()))?;
        if !scaled.fract().is_zero() {
            return Err(AmountError::TooManyDecimals {
                amount: self.to_string(),
                currency: currency.to_owned(),
                exponent,
            });
        }
        scaled
            .to_u64()
            .ok_or_else(|| AmountError::TooLarge(self.to_string()))
    }

    /// Reads a JSON number's text exactly (`12.5`, `0.01`, `1.25e1`).
    pub fn from_json_number(text: &str) -> Result<Self, AmountError> {
        let is_number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
        if !is_number || text.contains('_') {
            return Err(AmountError::NotANumber(text.to_owned()));
        }
        let precision = || AmountError::Precision(text.to_owned());
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(at) => (
                &text[..at],
                i64::from_str(&text[at + 1..]).map_err(|_| precision())?,
            ),
            None => (text, 0),
        };
        let mut value = Decimal::from_str_exact(mantissa).map_err(|_| precision())?;
        // Apply the power of ten exactly: a negative exponent only adds
        // decimals (bounded by the 28 a decimal holds), a positive one
        // first removes decimals, then multiplies.
        let scale = i64::from(value.scale()) - exponent;
        if scale >= 0 {
            let scale = u32::try_from(scale).map_err(|_| precision())?;
            value.set_scale(scale).map_err(|_| precision())?;
        } else {
            value.set_scale(0).map_err(|_| precision())?;
            let factor = u32::try_from(-scale)
                .ok()
                .filter(|s| *s <= Decimal::MAX_SCALE)
                .map(|s| Decimal::from_i128_with_scale(10i128.pow(s), 0))
                .ok_or_else(precision)?;
            value = value.checked_mul(factor).ok_or_else(precision)?;
        }
        if value.is_sign_negative() && !value.is_zero() {
            return Err(AmountError::Negative(text.to_owned()));
        }
        value.set_sign_positive(true);
        Ok(Self(value.normalize()))
    }
}

impl fmt::Display for Amount {
    /// The shortest exact decimal text: `12.5`, `0.01`, `10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.normalize(), f)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({self})")
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Written as the number's exact text, not through a float.
        let raw = RawValue::from_string(self.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Self::from_json_number(raw.get()).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minor(text: &str, currency: &str) -> Result<u64, AmountError> {
        Amount::from_json_number(text)?.to_minor(currency)
    }

    #[test]
    fn major_to_minor_exactly() {
        assert_eq!(minor("0.01", "EUR"), Ok(1));
        assert_eq!(minor("12.5", "EUR"), Ok(1250));
        assert_eq!(minor("12.50", "EUR"), Ok(1250));
        assert_eq!(minor("999999.99", "EUR"), Ok(99_999_999));
        assert_eq!(minor("0.1", "USD"), Ok(10));
        assert_eq!(minor("0", "EUR"), Ok(0));
        assert_eq!(minor("-0", "EUR"), Ok(0));
        assert_eq!(minor("1250", "JPY"), Ok(1250));
        assert_eq!(minor("1250.0", "JPY"), Ok(1250));
        assert_eq!(minor("1.234", "KWD"), Ok(1234));
        assert_eq!(minor("1.25e1", "EUR"), Ok(1250));
        assert_eq!(minor("125E-1", "EUR"), Ok(1250));
        assert_eq!(minor("1e+2", "EUR"), Ok(10000));
        assert_eq!(minor("184467440737095516.15", "EUR"), Ok(u64::MAX));
    }

    #[test]
    fn refuses_what_it_cannot_hold_exactly() {
        assert!(matches!(
            minor("12.505", "EUR"),
            Err(AmountError::TooManyDecimals { exponent: 2, .. })
        ));
        assert!(matches!(
            minor("1.5", "JPY"),
            Err(AmountError::TooManyDecimals { exponent: 0, .. })
        ));
        assert!(matches!(
            minor("1e-7", "EUR"),
            Err(AmountError::TooManyDecimals { .. })
        ));
        assert!(matches!(minor("-1", "EUR"), Err(AmountError::Negative(_))));
        assert!(matches!(
            minor("1e29", "EUR"),
            Err(AmountError::Precision(_))
        ));
        assert!(matches!(
            minor("1e400", "EUR"),
            Err(AmountError::Precision(_))
        ));
        assert!(matches!(
            minor("0.00000000000000000000000000001", "EUR"),
            Err(AmountError::Precision(_))
        ));
        assert!(matches!(
            minor("184467440737095516.16", "EUR"),
            Err(AmountError::TooLarge(_))
        ));
        assert!(matches!(
            minor("1", "XAU"),
            Err(AmountError::UnknownCurrency(_))
        ));
        assert!(matches!(
            minor("1", "eur"),
            Err(AmountError::UnknownCurrency(_))
        ));
        assert!(matches!(
            Amount::from_json_number("\"12.5\""),
            Err(AmountError::NotANumber(_))
        ));
    }

    #[test]
    fn minor_to_major_and_back() {
        for (m, currency, text) in [
            (1, "EUR", "0.01"),
            (1250, "EUR", "12.5"),
            (99_999_999, "EUR", "999999.99"),
            (1000, "EUR", "10"),
            (0, "EUR", "0"),
            (1250, "JPY", "1250"),
            (1234, "KWD", "1.234"),
        ] {
            let amount = Amount::from_minor(m, currency).unwrap();
            assert_eq!(amount.to_string(), text);
            assert_eq!(serde_json::to_string(&amount).unwrap(), text);
            let back: Amount = serde_json::from_str(text).unwrap();
            assert_eq!(back, amount);
            assert_eq!(back.to_minor(currency), Ok(m));
        }
    }

    #[test]
    fn deserializes_only_numbers() {
        assert!(serde_json::from_str::<Amount>("\"1\"").is_err());
        assert!(serde_json::from_str::<Amount>("null").is_err());
        assert!(serde_json::from_str::<Amount>("[1]").is_err());
        let a: Amount = serde_json::from_str(" 0.10 ").unwrap();
        assert_eq!(a.to_string(), "0.1");
    }
}
