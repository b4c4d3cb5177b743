//! Field 60 of the `cup` dialect: transaction type code (60.1), batch
//! number (60.2) and network management information code (60.3), followed
//! by optional terminal capability digits kept as they are.

use thiserror::Error;

/// The subfields of field 60.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field60 {
    /// 60.1, two digits: the transaction type (22 sale, 23 void, ...).
    pub transaction_type: u8,
    /// 60.2, six digits: the terminal's batch number.
    pub batch: u32,
    /// 60.3, three digits: network management code (001 sign-on, 201 settlement, ...).
    pub network_code: Option<u16>,
    /// 60.4 onwards, digits kept verbatim (terminal read capability, IC condition, ...).
    pub rest: String,
}

/// Field 60 text is out of shape.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Field60Error {
    /// Fewer than the 8 digits of 60.1 and 60.2, or 60.3 cut short.
    #[error("field 60 has {0} digits; 60.1 and 60.2 need 8 and 60.3 three more")]
    Length(usize),
    /// A non-digit.
    #[error("field 60 holds a non-digit at index {0}")]
    NonDigit(usize),
    /// A value too large for its subfield.
    #[error("field 60: {0} out of range")]
    Range(&'static str),
}

impl Field60 {
    /// Parses the digits of field 60.
    pub fn parse(text: &str) -> Result<Self, Field60Error> {
        if let Some(i) = text.bytes().position(|b| !b.is_ascii_digit()) {
            return Err(Field60Error::NonDigit(i));
        }
        if matches!(text.len(), 0..=7 | 9 | 10) {
            return Err(Field60Error::Length(text.len()));
        }
        let num = |r: std::ops::Range<usize>| text[r].parse::<u32>().expect("digits checked");
        Ok(Field60 {
            transaction_type: num(0..2) as u8,
            batch: num(2..8),
            network_code: (text.len() >= 11).then(|| num(8..11) as u16),
            rest: text.get(11..).unwrap_or_default().to_string(),
        })
    }

    /// The digits of field 60.
    pub fn to_text(&self) -> Result<String, Field60Error> {
        if self.transaction_type > 99 {
            return Err(Field60Error::Range("60.1 transaction type"));
        }
        if self.batch > 999_999 {
            return Err(Field60Error::Range("60.2 batch number"));
        }
        let mut s = format!("{:02}{:06}", self.transaction_type, self.batch);
        match self.network_code {
            Some(code) if code > 999 => {
                return Err(Field60Error::Range("60.3 network management code"));
            }
            Some(code) => s.push_str(&format!("{code:03}")),
            None if !self.rest.is_empty() => return Err(Field60Error::Range("60.4 without 60.3")),
            None => {}
        }
        if let Some(i) = self.rest.bytes().position(|b| !b.is_ascii_digit()) {
            return Err(Field60Error::NonDigit(11 + i));
        }
        s.push_str(&self.rest);
        Ok(s)
    }
}
