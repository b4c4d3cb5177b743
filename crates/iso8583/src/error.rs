//! Errors that say what failed and where: the element, the byte offset and why.

use std::fmt;
use thiserror::Error;

/// The part of a message an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// The message type indicator.
    Mti,
    /// The primary bitmap.
    PrimaryBitmap,
    /// The secondary bitmap (field 1).
    SecondaryBitmap,
    /// A data field, by number.
    Field(u8),
    /// The message as a whole (e.g. trailing bytes).
    Message,
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Mti => f.write_str("MTI"),
            Element::PrimaryBitmap => f.write_str("primary bitmap"),
            Element::SecondaryBitmap => f.write_str("secondary bitmap"),
            Element::Field(n) => write!(f, "field {n}"),
            Element::Message => f.write_str("message"),
        }
    }
}

/// Why decoding failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeErrorKind {
    /// The input ends inside an element.
    #[error("truncated: needs {needed} bytes, {available} left")]
    Truncated {
        /// Bytes the element needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// A length prefix exceeds the field's maximum.
    #[error("length {length} over maximum {max} {units}")]
    LengthOverMax {
        /// The length the prefix declares.
        length: usize,
        /// The field's maximum.
        max: u16,
        /// What the length counts.
        units: &'static str,
    },
    /// A length prefix is not a decimal number.
    #[error("length prefix is not decimal")]
    BadLengthPrefix,
    /// A BCD nibble outside what the field allows.
    #[error("bad BCD nibble {nibble:X}")]
    BadBcdNibble {
        /// The offending nibble.
        nibble: u8,
    },
    /// The filler nibble of an odd-length BCD value is not the dialect's pad.
    #[error("pad nibble {found:X}, expected {expected:X}")]
    BadPad {
        /// Nibble found.
        found: u8,
        /// Pad the dialect uses.
        expected: u8,
    },
    /// A digit was required.
    #[error("non-digit byte 0x{byte:02X} in an n element")]
    NonDigit {
        /// The offending byte.
        byte: u8,
    },
    /// A character the field's content type does not allow.
    #[error("byte 0x{byte:02X} not allowed in {content} content")]
    InvalidChar {
        /// The offending byte (as received).
        byte: u8,
        /// The field's content notation.
        content: &'static str,
    },
    /// Hexadecimal text was expected.
    #[error("byte 0x{byte:02X} is not a hexadecimal digit")]
    NotHex {
        /// The offending byte.
        byte: u8,
    },
    /// Hexadecimal text of odd length cannot hold whole bytes.
    #[error("odd hexadecimal length {length}")]
    OddHexLength {
        /// The declared length.
        length: usize,
    },
    /// A bitmap bit names a field the dialect does not define.
    #[error("bitmap announces field {field}, which the dialect does not define")]
    UndefinedField {
        /// The field number.
        field: u8,
    },
    /// Bytes remain after the last field the bitmap announces.
    #[error("{count} trailing bytes after the last field")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// A message could not be decoded: which element, at which byte offset, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{element} at offset {offset}: {kind}")]
pub struct DecodeError {
    /// The element being decoded.
    pub element: Element,
    /// Byte offset in the input where the problem is.
    pub offset: usize,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

/// Why encoding failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeErrorKind {
    /// The dialect has no spec for this field.
    #[error("the dialect does not define this field")]
    UndefinedField,
    /// A fixed field's value has the wrong length.
    #[error("length {length} {units}, the field is fixed at {expected}")]
    WrongLength {
        /// Length of the value.
        length: usize,
        /// The fixed length.
        expected: u16,
        /// What the lengths count.
        units: &'static str,
    },
    /// A variable field's value is longer than allowed.
    #[error("length {length} {units} over maximum {max}")]
    TooLong {
        /// Length of the value.
        length: usize,
        /// The maximum.
        max: u16,
        /// What the lengths count.
        units: &'static str,
    },
    /// A character the field's content type does not allow.
    #[error("byte 0x{byte:02X} at index {index} not allowed in {content} content")]
    InvalidChar {
        /// Index in the value.
        index: usize,
        /// The offending byte.
        byte: u8,
        /// The field's content notation.
        content: &'static str,
    },
    /// The MAC computed by the caller has a different size than the MAC field.
    #[error("MAC of {length} bytes, the field holds {expected}")]
    MacSize {
        /// Bytes given.
        length: usize,
        /// Bytes the field holds.
        expected: usize,
    },
}

/// A message could not be encoded: which element and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{element}: {kind}")]
pub struct EncodeError {
    /// The element being encoded.
    pub element: Element,
    /// What is wrong.
    pub kind: EncodeErrorKind,
}

/// A value handed to a typed setter or accessor is out of shape.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    /// An MTI must be four decimal digits.
    #[error("an MTI is four decimal digits, got {0} characters or a non-digit")]
    Mti(usize),
    /// A numeric field holds something other than decimal digits.
    #[error("field {field} is not a decimal number")]
    NotNumeric {
        /// The field.
        field: u8,
    },
    /// A number does not fit the field's width.
    #[error("field {field}: {value} does not fit in {width} digits")]
    TooWide {
        /// The field.
        field: u8,
        /// The value.
        value: u64,
        /// Digits available.
        width: usize,
    },
}
