//! Field specifications: what a dialect says about each data element.
//!
//! A dialect is data, not code: the codec reads these descriptions and packs
//! or unpacks any field from them, so a new dialect is a new table.

/// What characters a field may hold (ISO 8583:1987 §4.2 attribute notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// `n`: decimal digits.
    N,
    /// `an`: letters and digits.
    An,
    /// `ans`: letters, digits, space and printable specials (0x20..=0x7E).
    Ans,
    /// `z`: track 2/3 code set: digits and the `=` field separator (BCD nibble D).
    Z,
    /// `b`: binary data, shown as hexadecimal.
    B,
}

impl Content {
    /// The ISO 8583 notation of this content type (`n`, `an`, ...).
    pub const fn notation(self) -> &'static str {
        match self {
            Content::N => "n",
            Content::An => "an",
            Content::Ans => "ans",
            Content::Z => "z",
            Content::B => "b",
        }
    }

    /// Whether `byte` may appear in a text value of this content type.
    /// Always true for binary content.
    #[inline]
    pub const fn allows(self, byte: u8) -> bool {
        CHAR_CLASS[byte as usize] & self.class_bit() != 0
    }

    const fn class_bit(self) -> u8 {
        match self {
            Content::N => CLASS_N,
            Content::An => CLASS_AN,
            Content::Ans => CLASS_ANS,
            Content::Z => CLASS_Z,
            Content::B => CLASS_B,
        }
    }
}

const CLASS_N: u8 = 1;
const CLASS_AN: u8 = 2;
const CLASS_ANS: u8 = 4;
const CLASS_Z: u8 = 8;
const CLASS_B: u8 = 16;

/// For each byte, the content types that allow it: one table lookup per
/// byte when checking values (the codec's hottest loop).
const CHAR_CLASS: [u8; 256] = {
    let mut table = [CLASS_B; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_digit() {
            table[b] |= CLASS_N | CLASS_Z;
        }
        if c.is_ascii_alphanumeric() {
            table[b] |= CLASS_AN;
        }
        if c >= 0x20 && c <= 0x7E {
            table[b] |= CLASS_ANS;
        }
        if c == b'=' {
            table[b] |= CLASS_Z;
        }
        b += 1;
    }
    table
};

/// Which end of an odd-length BCD value the filler nibble goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Value left-aligned, filler nibble on the right (`"021"` → `02 10`).
    Left,
    /// Value right-aligned, filler nibble on the left (`"021"` → `00 21`).
    Right,
}

/// How a field's value is represented on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Packed BCD, two digits a byte; odd lengths get `pad` at the `align` side.
    /// For `z` content the separator `=` is nibble `D`.
    Bcd {
        /// Where the value sits when its digit count is odd.
        align: Align,
        /// The filler nibble (0x0 or 0xF), checked on decode.
        pad: u8,
    },
    /// One ASCII byte a character.
    Ascii,
    /// One EBCDIC (code page 500) byte a character.
    Ebcdic,
    /// Raw bytes (only for `b` content).
    Binary,
    /// Binary content written as uppercase hexadecimal ASCII, as ASCII
    /// dialects carry PIN blocks, MACs and ICC data.
    HexAscii,
}

/// How the length prefix of a variable field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixEncoding {
    /// Decimal digits packed as BCD: LL in 1 byte, LLL in 2.
    Bcd,
    /// Decimal digits in ASCII: LL in 2 bytes, LLL in 3.
    Ascii,
    /// Decimal digits in EBCDIC: LL in 2 bytes, LLL in 3.
    Ebcdic,
    /// Unsigned big-endian binary: LL in 1 byte, LLL in 2.
    Binary,
}

impl PrefixEncoding {
    /// Bytes taken on the wire by a prefix of `digits` decimal digits.
    pub const fn width(self, digits: u8) -> usize {
        match self {
            PrefixEncoding::Bcd | PrefixEncoding::Binary => (digits as usize).div_ceil(2),
            PrefixEncoding::Ascii | PrefixEncoding::Ebcdic => digits as usize,
        }
    }
}

/// Fixed or variable length, in the field's units (see [`FieldSpec::units`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Always exactly this many units.
    Fixed(u16),
    /// A length prefix of `digits` decimal digits (1 = LVAR, 2 = LLVAR,
    /// 3 = LLLVAR) followed by at most `max` units.
    Var {
        /// Decimal digits of the length prefix.
        digits: u8,
        /// Largest allowed length in units.
        max: u16,
    },
}

impl Length {
    /// LLVAR of at most `max` units.
    pub const fn llvar(max: u16) -> Self {
        Length::Var { digits: 2, max }
    }
    /// LLLVAR of at most `max` units.
    pub const fn lllvar(max: u16) -> Self {
        Length::Var { digits: 3, max }
    }
    /// The largest length in units this field can have.
    pub const fn max(self) -> u16 {
        match self {
            Length::Fixed(n) => n,
            Length::Var { max, .. } => max,
        }
    }
}

/// One data element of a dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The element's name, for documentation and traces.
    pub name: &'static str,
    /// Allowed characters.
    pub content: Content,
    /// Fixed or variable length.
    pub length: Length,
    /// Wire representation of the value.
    pub encoding: Encoding,
    /// Wire representation of the length prefix (ignored for fixed fields).
    pub prefix: PrefixEncoding,
}

impl FieldSpec {
    /// What the length of this field counts: digits for BCD, characters
    /// for text, bytes for raw binary, hex characters for [`Encoding::HexAscii`].
    pub const fn units(&self) -> &'static str {
        match self.encoding {
            Encoding::Bcd { .. } => "digits",
            Encoding::Ascii | Encoding::Ebcdic => "characters",
            Encoding::Binary => "bytes",
            Encoding::HexAscii => "hex characters",
        }
    }

    /// Bytes on the wire taken by a value of `units` units (prefix excluded).
    pub const fn wire_len(&self, units: usize) -> usize {
        match self.encoding {
            Encoding::Bcd { .. } => units.div_ceil(2),
            _ => units,
        }
    }

    /// Number of units a stored value of `value_len` bytes occupies.
    /// Values are stored as text for text content and as raw bytes for `b`.
    pub const fn units_of(&self, value_len: usize) -> usize {
        match self.encoding {
            Encoding::HexAscii => value_len * 2,
            _ => value_len,
        }
    }

    /// Stored value length in bytes for a field of `units` units.
    pub const fn value_len(&self, units: usize) -> usize {
        match self.encoding {
            Encoding::HexAscii => units / 2,
            _ => units,
        }
    }

    /// The ISO-style attribute string, e.g. `n..19` or `b 64` (for docs).
    pub fn attribute(&self) -> String {
        let c = self.content.notation();
        match self.length {
            Length::Fixed(n) if matches!(self.content, Content::B) => {
                format!("{c} {}", self.value_len(n as usize) * 8)
            }
            Length::Fixed(n) => format!("{c} {n}"),
            Length::Var { digits, max } => format!("{c}{}{max}", ".".repeat(digits as usize)),
        }
    }
}

/// How the message type indicator is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtiEncoding {
    /// Two bytes of BCD.
    Bcd,
    /// Four ASCII digits.
    Ascii,
    /// Four EBCDIC digits.
    Ebcdic,
}

/// How bitmaps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapEncoding {
    /// Eight raw bytes per bitmap.
    Binary,
    /// Sixteen uppercase hexadecimal ASCII characters per bitmap.
    HexAscii,
}

/// A complete dialect: MTI and bitmap representation plus a spec for every
/// defined field. Fields without a spec are refused in both directions.
#[derive(Debug)]
pub struct Dialect {
    /// Short name used on the command line (`cup`, `iso87ascii`).
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// MTI representation.
    pub mti: MtiEncoding,
    /// Bitmap representation.
    pub bitmap: BitmapEncoding,
    /// Specs indexed by field number; index 0 and 1 are unused (MTI, bitmap).
    pub fields: [Option<FieldSpec>; 129],
}

impl Dialect {
    /// The spec of field `number`, if the dialect defines it.
    pub fn field(&self, number: u8) -> Option<&FieldSpec> {
        self.fields.get(number as usize).and_then(Option::as_ref)
    }

    /// Builds the field array from `(number, spec)` pairs at compile time.
    ///
    /// # Panics
    /// At compile time, when a number is outside 2..=128 or given twice.
    pub const fn table(entries: &[(u8, FieldSpec)]) -> [Option<FieldSpec>; 129] {
        let mut fields = [None; 129];
        let mut i = 0;
        while i < entries.len() {
            let (number, spec) = entries[i];
            assert!(number >= 2 && number <= 128, "field number outside 2..=128");
            assert!(fields[number as usize].is_none(), "field defined twice");
            fields[number as usize] = Some(spec);
            i += 1;
        }
        fields
    }
}
