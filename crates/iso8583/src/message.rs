//! The message model: an MTI and the values of fields 2..=128.
//!
//! Values are stored in one buffer, as text for `n`, `an`, `ans` and `z`
//! fields and as raw bytes for `b` fields, so decoding a message costs two
//! allocations whatever its field count.

use crate::error::ValueError;
use std::fmt;

/// A message type indicator: four decimal digits (version, class, function, origin).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mti([u8; 4]);

impl Mti {
    /// Parses four ASCII digits.
    pub fn new(text: &str) -> Result<Self, ValueError> {
        let bytes: [u8; 4] = text
            .as_bytes()
            .try_into()
            .map_err(|_| ValueError::Mti(text.len()))?;
        Self::from_digits(bytes).ok_or(ValueError::Mti(text.len()))
    }

    /// From four ASCII digits; `None` when any is not a digit.
    pub fn from_digits(digits: [u8; 4]) -> Option<Self> {
        digits.iter().all(u8::is_ascii_digit).then_some(Mti(digits))
    }

    /// The four ASCII digits.
    pub fn digits(&self) -> [u8; 4] {
        self.0
    }

    /// The MTI as text.
    pub fn as_str(&self) -> &str {
        // Invariant: constructed only from ASCII digits.
        std::str::from_utf8(&self.0).expect("MTI digits are ASCII")
    }

    /// The MTI of the response to this request (function digit + 1:
    /// 0200 → 0210, 0400 → 0410, 0820 → 0830); `None` for a response or advice response.
    pub fn response(&self) -> Option<Self> {
        let function = self.0[2] - b'0';
        function.is_multiple_of(2).then(|| {
            let mut d = self.0;
            d[2] = b'0' + function + 1;
            Mti(d)
        })
    }

    /// True for request and advice MTIs (function digit even).
    pub fn is_request(&self) -> bool {
        (self.0[2] - b'0').is_multiple_of(2)
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({})", self.as_str())
    }
}

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    field: u8,
    start: u32,
    len: u32,
}

/// An ISO 8583 message: MTI plus field values, independent of any dialect.
///
/// The codec ([`crate::Dialect::encode`], [`crate::Dialect::decode`]) checks
/// values against a dialect; setters here only store them.
#[derive(Clone)]
pub struct Message {
    mti: Mti,
    /// Present fields, sorted by field number.
    slots: Vec<Slot>,
    /// Every value's bytes, addressed by the slots.
    data: Vec<u8>,
    /// Bytes in `data` no slot addresses any more (after overwrites).
    garbage: usize,
}

impl Message {
    /// An empty message of type `mti`.
    pub fn new(mti: Mti) -> Self {
        Message {
            mti,
            slots: Vec::new(),
            data: Vec::new(),
            garbage: 0,
        }
    }

    /// An empty message with room for `fields` fields and `bytes` bytes of values.
    pub fn with_capacity(mti: Mti, fields: usize, bytes: usize) -> Self {
        Message {
            mti,
            slots: Vec::with_capacity(fields.min(127)),
            data: Vec::with_capacity(bytes),
            garbage: 0,
        }
    }

    /// The message type indicator.
    pub fn mti(&self) -> Mti {
        self.mti
    }

    /// Replaces the message type indicator.
    pub fn set_mti(&mut self, mti: Mti) {
        self.mti = mti;
    }

    fn position(&self, field: u8) -> Result<usize, usize> {
        self.slots.binary_search_by_key(&field, |s| s.field)
    }

    /// Sets field `field` to `value` (text for `n`/`an`/`ans`/`z` fields,
    /// raw bytes for `b` fields), replacing any earlier value.
    ///
    /// # Panics
    /// When `field` is outside 2..=128 (1 is the secondary bitmap, which the
    /// codec derives) or the message would exceed 4 GiB.
    pub fn set(&mut self, field: u8, value: impl AsRef<[u8]>) -> &mut Self {
        assert!(
            (2..=128).contains(&field),
            "ISO 8583 field {field} is outside 2..=128"
        );
        let value = value.as_ref();
        let start = self.data.len();
        self.data.extend_from_slice(value);
        let slot = Slot {
            field,
            start: u32::try_from(start).expect("message under 4 GiB"),
            len: u32::try_from(value.len()).expect("value under 4 GiB"),
        };
        match self.position(field) {
            Ok(i) => {
                self.garbage += self.slots[i].len as usize;
                self.slots[i] = slot;
                self.compact_if_wasteful();
            }
            Err(i) => self.slots.insert(i, slot),
        }
        self
    }

    /// Appends a field known to be absent and greater than every present
    /// field (the decoder's path: fields arrive in ascending order).
    pub(crate) fn push_sorted(&mut self, field: u8, start: usize) {
        debug_assert!(self.slots.last().is_none_or(|s| s.field < field));
        let len = self.data.len() - start;
        // The decoder bounds input size far below 4 GiB (see frame limits).
        self.slots.push(Slot {
            field,
            start: start as u32,
            len: len as u32,
        });
    }

    /// The value buffer, for the decoder to write values into.
    pub(crate) fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Removes field `field`; returns whether it was present.
    pub fn remove(&mut self, field: u8) -> bool {
        match self.position(field) {
            Ok(i) => {
                self.garbage += self.slots.remove(i).len as usize;
                self.compact_if_wasteful();
                true
            }
            Err(_) => false,
        }
    }

    /// Bounds the buffer: rewrites it once more than half is unreachable.
    fn compact_if_wasteful(&mut self) {
        if self.garbage <= 256 || self.garbage * 2 <= self.data.len() {
            return;
        }
        let mut data = Vec::with_capacity(self.data.len() - self.garbage);
        for slot in &mut self.slots {
            let start = data.len();
            data.extend_from_slice(&self.data[slot.start as usize..][..slot.len as usize]);
            slot.start = start as u32;
        }
        self.data = data;
        self.garbage = 0;
    }

    /// The value of field `field`, if present.
    pub fn get(&self, field: u8) -> Option<&[u8]> {
        let slot = &self.slots[self.position(field).ok()?];
        Some(&self.data[slot.start as usize..][..slot.len as usize])
    }

    /// The value of a text field, if present and valid UTF-8 (decoded
    /// messages hold only ASCII in text fields).
    pub fn get_str(&self, field: u8) -> Option<&str> {
        std::str::from_utf8(self.get(field)?).ok()
    }

    /// Whether field `field` is present.
    pub fn has(&self, field: u8) -> bool {
        self.position(field).is_ok()
    }

    /// Present fields and their values in ascending field order.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (u8, &[u8])> + '_ {
        self.slots
            .iter()
            .map(|s| (s.field, &self.data[s.start as usize..][..s.len as usize]))
    }

    /// Number of present fields.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no field is present.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether any field of 65..=128 is present (a secondary bitmap is sent).
    pub fn has_secondary(&self) -> bool {
        self.slots.last().is_some_and(|s| s.field > 64)
    }

    /// The primary and secondary bitmaps as one 128-bit value, field 1 in
    /// the most significant bit (set when a secondary field is present).
    pub fn bitmap(&self) -> u128 {
        let mut map = self.slots.iter().fold(0u128, |m, s| m | bit(s.field));
        if self.has_secondary() {
            map |= bit(1);
        }
        map
    }

    // Typed accessors for the common fields.

    /// Field 2, primary account number.
    pub fn pan(&self) -> Option<&str> {
        self.get_str(2)
    }

    /// Field 3, processing code.
    pub fn processing_code(&self) -> Option<&str> {
        self.get_str(3)
    }

    /// Field 4, transaction amount in minor units.
    pub fn amount(&self) -> Option<Result<u64, ValueError>> {
        self.numeric(4)
    }

    /// Sets field 4 as twelve digits of minor units.
    pub fn set_amount(&mut self, minor_units: u64) -> Result<&mut Self, ValueError> {
        self.set_numeric(4, minor_units, 12)
    }

    /// Field 11, system trace audit number.
    pub fn stan(&self) -> Option<Result<u32, ValueError>> {
        self.numeric(11).map(|r| r.map(|v| v as u32))
    }

    /// Sets field 11 as six digits.
    pub fn set_stan(&mut self, stan: u32) -> Result<&mut Self, ValueError> {
        self.set_numeric(11, u64::from(stan), 6)
    }

    /// Field 37, retrieval reference number.
    pub fn rrn(&self) -> Option<&str> {
        self.get_str(37)
    }

    /// Field 38, authorization id response (approval code).
    pub fn auth_code(&self) -> Option<&str> {
        self.get_str(38)
    }

    /// Field 39, response code.
    pub fn response_code(&self) -> Option<&str> {
        self.get_str(39)
    }

    /// Field 41, card acceptor terminal id.
    pub fn terminal_id(&self) -> Option<&str> {
        self.get_str(41)
    }

    /// Field 42, card acceptor (merchant) id.
    pub fn merchant_id(&self) -> Option<&str> {
        self.get_str(42)
    }

    /// Field 49, transaction currency code (ISO 4217 numeric).
    pub fn currency(&self) -> Option<&str> {
        self.get_str(49)
    }

    /// A numeric field's value as an integer.
    pub fn numeric(&self, field: u8) -> Option<Result<u64, ValueError>> {
        let text = self.get(field)?;
        Some(parse_decimal(text).ok_or(ValueError::NotNumeric { field }))
    }

    /// Sets a numeric field to `value` written as exactly `width` digits.
    pub fn set_numeric(
        &mut self,
        field: u8,
        value: u64,
        width: usize,
    ) -> Result<&mut Self, ValueError> {
        let mut buf = [b'0'; 20];
        let digits = write_decimal(value, &mut buf);
        if digits.len() > width || width > 20 {
            return Err(ValueError::TooWide {
                field,
                value,
                width,
            });
        }
        let mut out = [b'0'; 20];
        out[width - digits.len()..width].copy_from_slice(digits);
        Ok(self.set(field, &out[..width]))
    }
}

/// The bit of `field` in a 128-bit bitmap (field 1 is the most significant).
pub(crate) const fn bit(field: u8) -> u128 {
    1u128 << (128 - field as u32)
}

/// Decimal digits to an integer; `None` on a non-digit, empty input or overflow.
pub(crate) fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Writes `value` in decimal at the end of `buf`, returning the digits.
fn write_decimal(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[i..];
        }
    }
}

/// Equal when the MTI and every field value are equal, however each
/// message's buffer happens to be laid out.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.mti == other.mti
            && self.slots.len() == other.slots.len()
            && self.fields().eq(other.fields())
    }
}

impl Eq for Message {}

impl fmt::Debug for Message {
    /// Field values are not shown: they may hold card data. Use
    /// [`crate::redact::Redacted`] to print a message safely.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("mti", &self.mti)
            .field(
                "fields",
                &self.slots.iter().map(|s| s.field).collect::<Vec<_>>(),
            )
            .finish()
    }
}
