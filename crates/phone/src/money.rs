//! Amounts as a cashier types them: `12.50` in major units of a currency,
//! converted exactly to minor units with [`nexo::amount`] (never through a
//! float), refusing what the currency cannot hold rather than rounding.

use nexo::amount::{Amount, AmountError, currency_exponent};

/// An amount typed by the cashier could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not digits with at most one decimal point (`12.50`, `7`).
    #[error("amount {0:?} is not a decimal number such as 12.50")]
    Syntax(String),
    /// Zero: nothing to pay or refund.
    #[error("the amount must be more than zero")]
    Zero,
    /// nexo refused it (too many decimals for the currency, unknown
    /// currency, too large).
    #[error(transparent)]
    Amount(#[from] AmountError),
}

/// An exact amount of a currency, in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    /// Minor units (`1250` for 12.50 EUR).
    pub minor: u64,
    /// ISO 4217 alphabetic code.
    pub currency: String,
}

impl Money {
    /// Reads `text` (major units: `12.50`, `12.5`, `1250` for JPY) in
    /// `currency`. Only plain decimals are accepted: no sign, exponent,
    /// grouping or leading/trailing point.
    pub fn parse(text: &str, currency: &str) -> Result<Self, MoneyError> {
        let syntax = || MoneyError::Syntax(text.chars().take(40).collect());
        let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !digits(fraction) {
            return Err(syntax());
        }
        // A plain decimal is a JSON number; nexo reads it exactly.
        let minor = Amount::from_json_number(text)?.to_minor(currency)?;
        if minor == 0 {
            return Err(MoneyError::Zero);
        }
        Ok(Self {
            minor,
            currency: currency.to_owned(),
        })
    }

    /// From minor units, checking the currency.
    pub fn from_minor(minor: u64, currency: &str) -> Result<Self, MoneyError> {
        currency_exponent(currency)?;
        Ok(Self {
            minor,
            currency: currency.to_owned(),
        })
    }

    /// The amount in major units for a nexo message (`12.5`).
    pub fn amount(&self) -> Amount {
        Amount::from_minor(self.minor, &self.currency)
            .expect("the currency was checked when the money was made")
    }
}

impl std::fmt::Display for Money {
    /// `12.50 EUR`: all the currency's decimals, as a receipt shows them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let exponent = currency_exponent(&self.currency)
            .expect("the currency was checked when the money was made");
        let scale = 10u64.pow(u32::from(exponent));
        if exponent == 0 {
            write!(f, "{} {}", self.minor, self.currency)
        } else {
            write!(
                f,
                "{}.{:0width$} {}",
                self.minor / scale,
                self.minor % scale,
                self.currency,
                width = usize::from(exponent)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_amounts_convert_exactly() {
        for (text, currency, minor) in [
            ("12.50", "EUR", 1250),
            ("12.5", "EUR", 1250),
            ("0.01", "EUR", 1),
            ("0.1", "USD", 10),
            ("7", "EUR", 700),
            ("1250", "JPY", 1250),
            ("1.234", "KWD", 1234),
            ("999999.99", "EUR", 99_999_999),
            ("184467440737095516.15", "EUR", u64::MAX),
        ] {
            let money = Money::parse(text, currency).unwrap();
            assert_eq!(money.minor, minor, "{text} {currency}");
            assert_eq!(money.currency, currency);
        }
    }

    #[test]
    fn refuses_rather_than_rounds() {
        assert!(matches!(
            Money::parse("12.505", "EUR"),
            Err(MoneyError::Amount(AmountError::TooManyDecimals { .. }))
        ));
        assert!(matches!(
            Money::parse("1.5", "JPY"),
            Err(MoneyError::Amount(AmountError::TooManyDecimals { .. }))
        ));
        assert!(matches!(
            Money::parse("1", "XAU"),
            Err(MoneyError::Amount(AmountError::UnknownCurrency(_)))
        ));
        assert!(matches!(
            Money::parse("184467440737095516.16", "EUR"),
            Err(MoneyError::Amount(AmountError::TooLarge(_)))
        ));
        assert_eq!(Money::parse("0.00", "EUR"), Err(MoneyError::Zero));
        for bad in [
            "", "-1", "+1", "1e2", "1,50", ".5", "5.", "1.2.3", " 1", "١٢",
        ] {
            assert!(
                matches!(Money::parse(bad, "EUR"), Err(MoneyError::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shows_every_decimal_and_writes_the_shortest_nexo_amount() {
        let m = Money::parse("12.5", "EUR").unwrap();
        assert_eq!(m.to_string(), "12.50 EUR");
        assert_eq!(m.amount().to_string(), "12.5");
        assert_eq!(Money::parse("1250", "JPY").unwrap().to_string(), "1250 JPY");
        assert_eq!(
            Money::parse("0.005", "KWD").unwrap().to_string(),
            "0.005 KWD"
        );
        assert_eq!(Money::from_minor(5, "EUR").unwrap().to_string(), "0.05 EUR");
    }
}
