//! Field values as text: how traces, JSON and pyiso8583 show them (binary
//! as uppercase hexadecimal), and the masking that keeps card data out of
//! logs and screens.

use crate::message::Message;
use crate::spec::{Content, Dialect};
use crate::tlv;
use std::fmt;
use thiserror::Error;

/// Fields that hold a PAN or track data, masked unless asked otherwise.
pub const CARD_DATA_FIELDS: [u8; 5] = [2, 34, 35, 36, 45];
/// Fields that hold a PIN block.
pub const PIN_FIELDS: [u8; 1] = [52];
/// Field that holds EMV chip data (card data inside tags 5A, 57, 5F20, 9F1F, 9F20).
pub const ICC_FIELD: u8 = 55;
/// EMV tags whose values are card data: PAN, track 2 equivalent, cardholder
/// name, track 1 and track 2 discretionary data.
const ICC_CARD_TAGS: [u32; 5] = [0x5A, 0x57, 0x5F20, 0x9F1F, 0x9F20];

/// A text value does not fit the field it is meant for.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    /// The dialect does not define the field.
    #[error("field {0}: the dialect does not define it")]
    Undefined(u8),
    /// A binary field's text is not an even number of hexadecimal digits.
    #[error("field {0}: binary values are written as an even number of hex digits")]
    NotHex(u8),
}

/// A field's value as text: hexadecimal for `b` fields, else the text itself.
pub fn value_to_text(dialect: &Dialect, field: u8, value: &[u8]) -> Result<String, TextError> {
    let spec = dialect.field(field).ok_or(TextError::Undefined(field))?;
    Ok(match spec.content {
        Content::B => hex_upper(value),
        _ => String::from_utf8_lossy(value).into_owned(),
    })
}

/// The stored value for a field from its text form (inverse of [`value_to_text`]).
pub fn value_from_text(dialect: &Dialect, field: u8, text: &str) -> Result<Vec<u8>, TextError> {
    let spec = dialect.field(field).ok_or(TextError::Undefined(field))?;
    match spec.content {
        Content::B => parse_hex(text).ok_or(TextError::NotHex(field)),
        _ => Ok(text.as_bytes().to_vec()),
    }
}

/// Uppercase hexadecimal.
pub fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses hexadecimal (either case); `None` on odd length or a non-hex digit.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if t.len() % 2 == 1 {
        return None;
    }
    t.chunks_exact(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            Some((hi << 4 | lo) as u8)
        })
        .collect()
}

/// Masks a PAN to its first six and last four digits (`411111******1111`).
/// Numbers of 10 digits or fewer keep only the last four.
pub fn mask_pan(pan: &str) -> String {
    let chars: Vec<char> = pan.chars().collect();
    let n = chars.len();
    let head = if n > 10 { 6 } else { 0 };
    let tail = n.min(4);
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < head || i >= n - tail { *c } else { '*' })
        .collect()
}

/// A field's text with card data masked: PANs to first 6 and last 4, track
/// data to the masked PAN then stars, PIN blocks fully, and the card-data
/// tags inside chip data fully.
pub fn masked_text(dialect: &Dialect, field: u8, value: &[u8]) -> Result<String, TextError> {
    let text = value_to_text(dialect, field, value)?;
    Ok(if CARD_DATA_FIELDS.contains(&field) {
        mask_track(&text)
    } else if PIN_FIELDS.contains(&field) {
        "*".repeat(text.len())
    } else if field == ICC_FIELD {
        mask_icc(value)
    } else {
        text
    })
}

/// Keeps the masked account number before the first separator and stars the rest.
fn mask_track(text: &str) -> String {
    let cut = text.find(['=', '^', 'D']).unwrap_or(text.len());
    let (pan, rest) = text.split_at(cut);
    let digits: String = pan.chars().filter(char::is_ascii_digit).collect();
    let mut out = if digits.len() == pan.len() {
        mask_pan(pan)
    } else {
        "*".repeat(pan.len())
    };
    out.push_str(&"*".repeat(rest.len()));
    out
}

/// Chip data as hex with the values of card-data tags replaced by stars.
/// Unparseable chip data is starred whole: it may hold anything.
fn mask_icc(value: &[u8]) -> String {
    let mut hex = hex_upper(value).into_bytes();
    let mut ok = true;
    for_each_object(
        value,
        0,
        0,
        &mut |tlv| {
            if ICC_CARD_TAGS.contains(&tlv.tag) {
                for b in &mut hex[tlv.value_offset * 2..(tlv.value_offset + tlv.value.len()) * 2] {
                    *b = b'*';
                }
            }
        },
        &mut ok,
    );
    if !ok {
        return "*".repeat(hex.len());
    }
    String::from_utf8(hex).expect("hex and stars are ASCII")
}

fn for_each_object(
    data: &[u8],
    base: usize,
    depth: usize,
    f: &mut impl FnMut(&tlv::Tlv<'_>),
    ok: &mut bool,
) {
    for item in tlv::iter(data) {
        let Ok(mut obj) = item else {
            *ok = false;
            return;
        };
        obj.offset += base;
        obj.value_offset += base;
        f(&obj);
        if obj.is_constructed() && depth + 1 < tlv::MAX_DEPTH {
            for_each_object(obj.value, obj.value_offset, depth + 1, f, ok);
        }
    }
}

/// Displays a message on one line with card data masked, for logs:
/// `0200 2=411111******1111 3=000000 4=000000001000 ...`.
pub struct Redacted<'a> {
    /// The dialect that says which fields are binary.
    pub dialect: &'a Dialect,
    /// The message.
    pub message: &'a Message,
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message.mti())?;
        for (field, value) in self.message.fields() {
            match masked_text(self.dialect, field, value) {
                Ok(text) => write!(f, " {field}={text}")?,
                Err(_) => write!(f, " {field}=<undefined>")?,
            }
        }
        Ok(())
    }
}
