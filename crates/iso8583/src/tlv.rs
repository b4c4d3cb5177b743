//! BER-TLV, as EMV carries chip data in field 55 (EMV Book 3, Annex B).
//!
//! Parsing borrows from the input, bounds nesting depth, and reports the
//! offset of whatever is malformed.

use thiserror::Error;

/// Deepest nesting of constructed objects followed; EMV data nests at most
/// two or three levels, so this bounds recursion on hostile input.
pub const MAX_DEPTH: usize = 8;

/// One data object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag, its bytes big-endian in a `u32` (`0x9F02`, `0x5A`).
    pub tag: u32,
    /// Offset of the tag in the parsed input.
    pub offset: usize,
    /// Offset of the value in the parsed input.
    pub value_offset: usize,
    /// The value bytes.
    pub value: &'a [u8],
}

impl Tlv<'_> {
    /// Whether the value is itself a sequence of data objects (bit 6 of the first tag byte).
    pub fn is_constructed(&self) -> bool {
        let first = self
            .tag
            .to_be_bytes()
            .into_iter()
            .find(|b| *b != 0)
            .unwrap_or(0);
        first & 0x20 != 0
    }
}

/// BER-TLV data is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlvError {
    /// Input ends inside a tag, length or value.
    #[error("TLV truncated at offset {offset}")]
    Truncated {
        /// Where.
        offset: usize,
    },
    /// Tags of more than four bytes are not used by EMV.
    #[error("TLV tag longer than 4 bytes at offset {offset}")]
    TagTooLong {
        /// Where.
        offset: usize,
    },
    /// Length fields of more than 3 bytes (or indefinite length).
    #[error("unsupported TLV length form at offset {offset}")]
    BadLength {
        /// Where.
        offset: usize,
    },
    /// Constructed objects nested deeper than [`MAX_DEPTH`].
    #[error("TLV nested deeper than {MAX_DEPTH} at offset {offset}")]
    TooDeep {
        /// Where.
        offset: usize,
    },
}

/// Iterator over the top-level objects of BER-TLV data.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
}

/// Iterates over the top-level data objects of `data`. Filler bytes 0x00 and
/// 0xFF between objects are skipped, as EMV allows.
pub fn iter(data: &[u8]) -> TlvIter<'_> {
    TlvIter {
        data,
        pos: 0,
        base: 0,
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>, TlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        while matches!(self.data.get(self.pos), Some(0x00 | 0xFF)) {
            self.pos += 1;
        }
        if self.pos >= self.data.len() {
            return None;
        }
        let result = self.read();
        if result.is_err() {
            self.pos = self.data.len();
        }
        Some(result)
    }
}

impl<'a> TlvIter<'a> {
    fn read(&mut self) -> Result<Tlv<'a>, TlvError> {
        let d = self.data;
        let at = |pos: usize| self.base + pos;
        let start = self.pos;
        let mut tag = u32::from(d[start]);
        let mut pos = start + 1;
        if d[start] & 0x1F == 0x1F {
            loop {
                let b = *d.get(pos).ok_or(TlvError::Truncated { offset: at(pos) })?;
                if pos - start >= 4 {
                    return Err(TlvError::TagTooLong { offset: at(start) });
                }
                tag = tag << 8 | u32::from(b);
                pos += 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let first = *d.get(pos).ok_or(TlvError::Truncated { offset: at(pos) })?;
        pos += 1;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 3 {
                return Err(TlvError::BadLength {
                    offset: at(pos - 1),
                });
            }
            let bytes = d
                .get(pos..pos + n)
                .ok_or(TlvError::Truncated { offset: at(pos) })?;
            pos += n;
            bytes
                .iter()
                .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
        };
        let value = d
            .get(pos..)
            .and_then(|rest| rest.get(..len))
            .ok_or(TlvError::Truncated { offset: at(pos) })?;
        self.pos = pos + len;
        Ok(Tlv {
            tag,
            offset: at(start),
            value_offset: at(pos),
            value,
        })
    }
}

/// Finds the first object with `tag`, searching inside constructed objects.
pub fn find(data: &[u8], tag: u32) -> Result<Option<&[u8]>, TlvError> {
    find_at(data, tag, 0, 0)
}

fn find_at(data: &[u8], tag: u32, base: usize, depth: usize) -> Result<Option<&[u8]>, TlvError> {
    for tlv in (TlvIter { data, pos: 0, base }) {
        let tlv = tlv?;
        if tlv.tag == tag {
            return Ok(Some(tlv.value));
        }
        if tlv.is_constructed() {
            if depth + 1 >= MAX_DEPTH {
                return Err(TlvError::TooDeep { offset: tlv.offset });
            }
            if let Some(v) = find_at(tlv.value, tag, tlv.value_offset, depth + 1)? {
                return Ok(Some(v));
            }
        }
    }
    Ok(None)
}

/// Appends one data object with `tag` and `value` (DER lengths).
///
/// # Panics
/// When `value` is 16 MiB or longer (no EMV object comes near that).
pub fn write(tag: u32, value: &[u8], out: &mut Vec<u8>) {
    let tag_bytes = tag.to_be_bytes();
    let skip = tag_bytes.iter().take_while(|b| **b == 0).count().min(3);
    out.extend_from_slice(&tag_bytes[skip..]);
    let len = value.len();
    assert!(len < 1 << 24, "TLV value too long");
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xFFFF => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        _ => out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(value);
}
