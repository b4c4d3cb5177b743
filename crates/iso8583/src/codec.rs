//! Packing and unpacking messages by a dialect's field table.
//!
//! Decoding is total: any byte string yields a [`Message`] or a
//! [`DecodeError`] naming the element, offset and reason. It never panics and
//! allocates at most a small multiple of the input's size.

use crate::error::{DecodeError, DecodeErrorKind, Element, EncodeError, EncodeErrorKind};
use crate::message::{Message, Mti, bit};
use crate::spec::{
    Align, BitmapEncoding, Content, Dialect, Encoding, FieldSpec, Length, MtiEncoding,
    PrefixEncoding,
};

/// ASCII 0x20..=0x7E to EBCDIC code page 500.
const ASCII_TO_EBCDIC: [u8; 95] = [
    0x40, 0x4F, 0x7F, 0x7B, 0x5B, 0x6C, 0x50, 0x7D, 0x4D, 0x5D, 0x5C, 0x4E, 0x6B, 0x60, 0x4B, 0x61,
    0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0x7A, 0x5E, 0x4C, 0x7E, 0x6E, 0x6F,
    0x7C, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6,
    0xD7, 0xD8, 0xD9, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0x4A, 0xE0, 0x5A, 0x5F, 0x6D,
    0x79, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96,
    0x97, 0x98, 0x99, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xC0, 0xBB, 0xD0, 0xA1,
];

/// EBCDIC (code page 500) to ASCII for the printable range; 0 where unmapped.
const EBCDIC_TO_ASCII: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < ASCII_TO_EBCDIC.len() {
        table[ASCII_TO_EBCDIC[i] as usize] = 0x20 + i as u8;
        i += 1;
    }
    table
};

const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

fn ascii_to_ebcdic(byte: u8) -> Option<u8> {
    byte.checked_sub(0x20)
        .and_then(|i| ASCII_TO_EBCDIC.get(i as usize))
        .copied()
}

/// A cursor over the input that turns shortfalls into errors with offsets.
struct Reader<'w> {
    wire: &'w [u8],
    pos: usize,
}

impl<'w> Reader<'w> {
    fn take(&mut self, n: usize, element: Element) -> Result<&'w [u8], DecodeError> {
        let available = self.wire.len() - self.pos;
        if n > available {
            return Err(DecodeError {
                element,
                offset: self.pos,
                kind: DecodeErrorKind::Truncated {
                    needed: n,
                    available,
                },
            });
        }
        let bytes = &self.wire[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }
}

fn err(element: Element, offset: usize, kind: DecodeErrorKind) -> DecodeError {
    DecodeError {
        element,
        offset,
        kind,
    }
}

impl Dialect {
    /// Encodes `msg` into a new buffer.
    pub fn encode(&self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.estimate(msg));
        self.encode_into(msg, &mut out)?;
        Ok(out)
    }

    /// Encodes `msg`, appending to `out` (reuse one buffer across messages).
    /// On error `out` may hold a partial message.
    pub fn encode_into(&self, msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write_mti(msg.mti(), out);
        self.write_bitmap(msg.bitmap(), out);
        for (field, value) in msg.fields() {
            self.write_field(field, value, out)?;
        }
        Ok(())
    }

    /// Encodes `msg` with a MAC in its last field: 64, or 128 when a
    /// secondary field is present. The bitmap announces the MAC field,
    /// `mac` is called once with the bytes from the MTI through the last
    /// field before the MAC (exactly the bytes sent), and its result is
    /// appended. Any value `msg` already holds for the MAC field is ignored.
    pub fn encode_with_mac<M: AsRef<[u8]>>(
        &self,
        msg: &Message,
        mac: impl FnOnce(&[u8]) -> M,
    ) -> Result<Vec<u8>, EncodeError> {
        self.try_encode_with_mac(msg, |scope| Ok::<_, std::convert::Infallible>(mac(scope)))
            .map_err(|e| match e {
                MacEncodeError::Encode(e) => e,
                MacEncodeError::Mac(never) => match never {},
            })
    }

    /// [`Dialect::encode_with_mac`] with a MAC computation that can fail
    /// (a key of the wrong algorithm): its error is returned, and nothing is
    /// encoded with a MAC that was not computed.
    pub fn try_encode_with_mac<M: AsRef<[u8]>, E>(
        &self,
        msg: &Message,
        mac: impl FnOnce(&[u8]) -> Result<M, E>,
    ) -> Result<Vec<u8>, MacEncodeError<E>> {
        let mac_field = mac_field_of(msg);
        let spec = self.spec(mac_field)?;
        let mut out = Vec::with_capacity(self.estimate(msg) + 16);
        self.write_mti(msg.mti(), &mut out);
        self.write_bitmap(msg.bitmap() | bit(mac_field), &mut out);
        for (field, value) in msg.fields().filter(|(f, _)| *f != mac_field) {
            self.write_field(field, value, &mut out)?;
        }
        let mac = mac(&out).map_err(MacEncodeError::Mac)?;
        let expected = spec.value_len(spec.length.max() as usize);
        if mac.as_ref().len() != expected {
            return Err(MacEncodeError::Encode(EncodeError {
                element: Element::Field(mac_field),
                kind: EncodeErrorKind::MacSize {
                    length: mac.as_ref().len(),
                    expected,
                },
            }));
        }
        self.write_field(mac_field, mac.as_ref(), &mut out)?;
        Ok(out)
    }

    /// Decodes one message that fills `wire` exactly.
    pub fn decode(&self, wire: &[u8]) -> Result<Message, DecodeError> {
        self.decode_with_mac_scope(wire).map(|(msg, _)| msg)
    }

    /// Decodes like [`Dialect::decode`] and also returns the MAC scope: the
    /// bytes from the MTI up to the MAC field (64, or 128 with a secondary
    /// bitmap) when that field is present, ready for MAC verification
    /// without re-encoding.
    pub fn decode_with_mac_scope<'w>(
        &self,
        wire: &'w [u8],
    ) -> Result<(Message, Option<&'w [u8]>), DecodeError> {
        let mut r = Reader { wire, pos: 0 };
        let mti = self.read_mti(&mut r)?;
        let primary = self.read_bitmap(&mut r, Element::PrimaryBitmap)?;
        let mut map = u128::from(primary) << 64;
        if map & bit(1) != 0 {
            map |= u128::from(self.read_bitmap(&mut r, Element::SecondaryBitmap)?);
        }
        let bitmap_end = r.pos;
        // Values never take more than two bytes per input byte (BCD digits).
        let mut msg = Message::with_capacity(mti, map.count_ones() as usize, wire.len() * 2);
        let mac_field = if map & bit(1) != 0 { 128 } else { 64 };
        let mut mac_scope = None;
        let mut rest = map & !bit(1);
        while rest != 0 {
            let field = rest.leading_zeros() as u8 + 1;
            rest &= !bit(field);
            let Some(spec) = self.field(field) else {
                return Err(err(
                    Element::Field(field),
                    bitmap_end,
                    DecodeErrorKind::UndefinedField { field },
                ));
            };
            if field == mac_field {
                mac_scope = Some(&wire[..r.pos]);
            }
            read_field(field, spec, &mut r, &mut msg)?;
        }
        if r.pos != wire.len() {
            return Err(err(
                Element::Message,
                r.pos,
                DecodeErrorKind::TrailingBytes {
                    count: wire.len() - r.pos,
                },
            ));
        }
        Ok((msg, mac_scope))
    }

    fn spec(&self, field: u8) -> Result<&FieldSpec, EncodeError> {
        self.field(field).ok_or(EncodeError {
            element: Element::Field(field),
            kind: EncodeErrorKind::UndefinedField,
        })
    }

    /// A generous guess at the encoded size, to allocate once.
    fn estimate(&self, msg: &Message) -> usize {
        32 + msg.fields().map(|(_, v)| 3 + 2 * v.len()).sum::<usize>()
    }

    fn write_mti(&self, mti: Mti, out: &mut Vec<u8>) {
        let d = mti.digits();
        match self.mti {
            MtiEncoding::Bcd => out.extend_from_slice(&[
                (d[0] - b'0') << 4 | (d[1] - b'0'),
                (d[2] - b'0') << 4 | (d[3] - b'0'),
            ]),
            MtiEncoding::Ascii => out.extend_from_slice(&d),
            MtiEncoding::Ebcdic => out.extend(d.iter().map(|b| 0xF0 | (b - b'0'))),
        }
    }

    fn read_mti(&self, r: &mut Reader<'_>) -> Result<Mti, DecodeError> {
        let start = r.pos;
        let mut digits = [0u8; 4];
        match self.mti {
            MtiEncoding::Bcd => {
                let bytes = r.take(2, Element::Mti)?;
                for (i, nibble) in nibbles(bytes).enumerate() {
                    if nibble > 9 {
                        return Err(err(
                            Element::Mti,
                            start + i / 2,
                            DecodeErrorKind::BadBcdNibble { nibble },
                        ));
                    }
                    digits[i] = b'0' + nibble;
                }
            }
            MtiEncoding::Ascii | MtiEncoding::Ebcdic => {
                let bytes = r.take(4, Element::Mti)?;
                for (i, &byte) in bytes.iter().enumerate() {
                    let ascii = match self.mti {
                        MtiEncoding::Ebcdic => EBCDIC_TO_ASCII[byte as usize],
                        _ => byte,
                    };
                    if !ascii.is_ascii_digit() {
                        return Err(err(
                            Element::Mti,
                            start + i,
                            DecodeErrorKind::NonDigit { byte },
                        ));
                    }
                    digits[i] = ascii;
                }
            }
        }
        Ok(Mti::from_digits(digits).expect("digits checked above"))
    }

    fn write_bitmap(&self, map: u128, out: &mut Vec<u8>) {
        let bytes = map.to_be_bytes();
        let len = if map & bit(1) != 0 { 16 } else { 8 };
        match self.bitmap {
            BitmapEncoding::Binary => out.extend_from_slice(&bytes[..len]),
            BitmapEncoding::HexAscii => {
                for b in &bytes[..len] {
                    out.extend_from_slice(&[
                        HEX_DIGITS[(b >> 4) as usize],
                        HEX_DIGITS[(b & 15) as usize],
                    ]);
                }
            }
        }
    }

    fn read_bitmap(&self, r: &mut Reader<'_>, element: Element) -> Result<u64, DecodeError> {
        let start = r.pos;
        match self.bitmap {
            BitmapEncoding::Binary => {
                let bytes = r.take(8, element)?;
                Ok(u64::from_be_bytes(bytes.try_into().expect("took 8 bytes")))
            }
            BitmapEncoding::HexAscii => {
                let text = r.take(16, element)?;
                text.iter().enumerate().try_fold(0u64, |acc, (i, &byte)| {
                    let v = hex_value(byte)
                        .ok_or_else(|| err(element, start + i, DecodeErrorKind::NotHex { byte }))?;
                    Ok(acc << 4 | u64::from(v))
                })
            }
        }
    }

    fn write_field(&self, field: u8, value: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let spec = self.spec(field)?;
        let element = Element::Field(field);
        let fail = |kind| EncodeError { element, kind };
        let units = spec.units_of(value.len());
        match spec.length {
            Length::Fixed(expected) if units != expected as usize => {
                return Err(fail(EncodeErrorKind::WrongLength {
                    length: units,
                    expected,
                    units: spec.units(),
                }));
            }
            Length::Fixed(_) => {}
            Length::Var { digits, max } => {
                if units > max as usize {
                    return Err(fail(EncodeErrorKind::TooLong {
                        length: units,
                        max,
                        units: spec.units(),
                    }));
                }
                write_prefix(spec.prefix, digits, units, out);
            }
        }
        if spec.encoding != Encoding::Binary
            && spec.encoding != Encoding::HexAscii
            && let Some(index) = value.iter().position(|&b| !spec.content.allows(b))
        {
            let byte = value[index];
            return Err(fail(EncodeErrorKind::InvalidChar {
                index,
                byte,
                content: spec.content.notation(),
            }));
        }
        match spec.encoding {
            Encoding::Bcd { align, pad } => write_bcd(value, align, pad, out),
            Encoding::Ascii => out.extend_from_slice(value),
            Encoding::Ebcdic => {
                out.extend(
                    value
                        .iter()
                        .map(|&b| ascii_to_ebcdic(b).expect("content types are printable ASCII")),
                );
            }
            Encoding::Binary => out.extend_from_slice(value),
            Encoding::HexAscii => {
                for b in value {
                    out.extend_from_slice(&[
                        HEX_DIGITS[(b >> 4) as usize],
                        HEX_DIGITS[(b & 15) as usize],
                    ]);
                }
            }
        }
        Ok(())
    }
}

/// Encoding with a MAC failed: in the message, or in computing the MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacEncodeError<E> {
    /// The message does not fit the dialect.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The MAC could not be computed.
    #[error("MAC: {0}")]
    Mac(E),
}

/// The field that carries the MAC of `msg`: 128 with a secondary bitmap, else 64.
pub fn mac_field_of(msg: &Message) -> u8 {
    if msg.has_secondary() { 128 } else { 64 }
}

fn nibbles(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    bytes.iter().flat_map(|b| [b >> 4, b & 15])
}

/// Callers have checked `ch` against an `n` or `z` content type; the mask
/// keeps a misconfigured table from panicking.
fn bcd_nibble(ch: u8) -> u8 {
    if ch == b'=' {
        0xD
    } else {
        ch.wrapping_sub(b'0') & 0x0F
    }
}

fn write_bcd(value: &[u8], align: Align, pad: u8, out: &mut Vec<u8>) {
    out.reserve(value.len().div_ceil(2));
    let (head, body) = match (value.len() % 2 == 1, align) {
        (true, Align::Right) => value.split_at(1),
        _ => value.split_at(0),
    };
    if let Some(&first) = head.first() {
        out.push(pad << 4 | bcd_nibble(first));
    }
    let pairs = body.chunks_exact(2);
    let rest = pairs.remainder();
    out.extend(pairs.map(|pair| bcd_nibble(pair[0]) << 4 | bcd_nibble(pair[1])));
    if let Some(&last) = rest.first() {
        out.push(bcd_nibble(last) << 4 | pad);
    }
}

fn write_prefix(encoding: PrefixEncoding, digits: u8, len: usize, out: &mut Vec<u8>) {
    match encoding {
        PrefixEncoding::Binary => {
            let bytes = (len as u32).to_be_bytes();
            out.extend_from_slice(&bytes[4 - encoding.width(digits)..]);
        }
        PrefixEncoding::Bcd => {
            let width = encoding.width(digits);
            let mut v = len;
            let start = out.len();
            out.resize(start + width, 0);
            for slot in out[start..].iter_mut().rev() {
                *slot = ((v / 10 % 10) << 4 | (v % 10)) as u8;
                v /= 100;
            }
        }
        PrefixEncoding::Ascii | PrefixEncoding::Ebcdic => {
            let start = out.len();
            out.resize(start + digits as usize, 0);
            let mut v = len;
            for slot in out[start..].iter_mut().rev() {
                let d = (v % 10) as u8;
                *slot = if encoding == PrefixEncoding::Ascii {
                    b'0' + d
                } else {
                    0xF0 | d
                };
                v /= 10;
            }
        }
    }
}

fn read_prefix(
    spec: &FieldSpec,
    digits: u8,
    element: Element,
    r: &mut Reader<'_>,
) -> Result<usize, DecodeError> {
    let start = r.pos;
    let bytes = r.take(spec.prefix.width(digits), element)?;
    let bad = || err(element, start, DecodeErrorKind::BadLengthPrefix);
    match spec.prefix {
        PrefixEncoding::Binary => Ok(bytes.iter().fold(0usize, |acc, &b| acc << 8 | b as usize)),
        PrefixEncoding::Bcd => nibbles(bytes).try_fold(0usize, |acc, n| {
            if n > 9 {
                Err(bad())
            } else {
                Ok(acc * 10 + n as usize)
            }
        }),
        PrefixEncoding::Ascii => bytes.iter().try_fold(0usize, |acc, &b| {
            if b.is_ascii_digit() {
                Ok(acc * 10 + (b - b'0') as usize)
            } else {
                Err(bad())
            }
        }),
        PrefixEncoding::Ebcdic => bytes.iter().try_fold(0usize, |acc, &b| {
            if (0xF0..=0xF9).contains(&b) {
                Ok(acc * 10 + (b & 15) as usize)
            } else {
                Err(bad())
            }
        }),
    }
}

fn read_field(
    field: u8,
    spec: &FieldSpec,
    r: &mut Reader<'_>,
    msg: &mut Message,
) -> Result<(), DecodeError> {
    let element = Element::Field(field);
    let units = match spec.length {
        Length::Fixed(n) => n as usize,
        Length::Var { digits, max } => {
            let prefix_at = r.pos;
            let units = read_prefix(spec, digits, element, r)?;
            if units > max as usize {
                return Err(err(
                    element,
                    prefix_at,
                    DecodeErrorKind::LengthOverMax {
                        length: units,
                        max,
                        units: spec.units(),
                    },
                ));
            }
            units
        }
    };
    if spec.encoding == Encoding::HexAscii && units % 2 == 1 {
        return Err(err(
            element,
            r.pos,
            DecodeErrorKind::OddHexLength { length: units },
        ));
    }
    let at = r.pos;
    let bytes = r.take(spec.wire_len(units), element)?;
    let start = msg.data_mut().len();
    let out = msg.data_mut();
    match spec.encoding {
        Encoding::Bcd { align, pad } => {
            read_bcd(spec.content, align, pad, units, bytes, at, element, out)?
        }
        Encoding::Ascii | Encoding::Ebcdic => {
            let ebcdic = spec.encoding == Encoding::Ebcdic;
            for (i, &byte) in bytes.iter().enumerate() {
                let ascii = if ebcdic {
                    EBCDIC_TO_ASCII[byte as usize]
                } else {
                    byte
                };
                if ascii == 0 || !spec.content.allows(ascii) {
                    let kind = if spec.content == Content::N {
                        DecodeErrorKind::NonDigit { byte }
                    } else {
                        DecodeErrorKind::InvalidChar {
                            byte,
                            content: spec.content.notation(),
                        }
                    };
                    return Err(err(element, at + i, kind));
                }
                out.push(ascii);
            }
        }
        Encoding::Binary => out.extend_from_slice(bytes),
        Encoding::HexAscii => {
            for (i, pair) in bytes.chunks_exact(2).enumerate() {
                let digit = |j: usize| {
                    hex_value(pair[j]).ok_or_else(|| {
                        err(
                            element,
                            at + 2 * i + j,
                            DecodeErrorKind::NotHex { byte: pair[j] },
                        )
                    })
                };
                out.push(digit(0)? << 4 | digit(1)?);
            }
        }
    }
    msg.push_sorted(field, start);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn read_bcd(
    content: Content,
    align: Align,
    pad: u8,
    units: usize,
    bytes: &[u8],
    at: usize,
    element: Element,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let digit = |nibble: u8, index: usize| match nibble {
        0..=9 => Ok(b'0' + nibble),
        0xD if content == Content::Z => Ok(b'='),
        _ => Err(err(
            element,
            at + index,
            DecodeErrorKind::BadBcdNibble { nibble },
        )),
    };
    let check_pad = |nibble: u8, index: usize| {
        if nibble == pad {
            Ok(())
        } else {
            Err(err(
                element,
                at + index,
                DecodeErrorKind::BadPad {
                    found: nibble,
                    expected: pad,
                },
            ))
        }
    };
    out.reserve(units);
    let odd = units % 2 == 1;
    let (first, body) = match (odd, align, bytes.split_first()) {
        (true, Align::Right, Some((&first, rest))) => (Some(first), rest),
        _ => (None, bytes),
    };
    if let Some(b) = first {
        check_pad(b >> 4, 0)?;
        out.push(digit(b & 15, 0)?);
    }
    let offset = usize::from(first.is_some());
    let last = if odd && align == Align::Left {
        body.len().checked_sub(1)
    } else {
        None
    };
    for (i, &b) in body.iter().enumerate() {
        out.push(digit(b >> 4, offset + i)?);
        if Some(i) == last {
            check_pad(b & 15, offset + i)?;
        } else {
            out.push(digit(b & 15, offset + i)?);
        }
    }
    Ok(())
}
