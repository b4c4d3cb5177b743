//! ISO 9564-1 PIN blocks: formats 0, 1 and 3 (8 bytes, TDES) and format 4
//! (16 bytes, AES), encode and decode with PAN binding and validation.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::keys::PinKey;
use crate::primitives::xor_into;

/// A PIN block could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinBlockError {
    /// The PIN is not 4 to 12 decimal digits.
    #[error("a PIN is 4 to 12 decimal digits")]
    InvalidPin,
    /// The PAN is not 8 to 19 decimal digits.
    #[error("a PAN is 8 to 19 decimal digits")]
    InvalidPan,
    /// The format needs a PAN and none was given.
    #[error("ISO format {0} binds the PIN to the PAN: a PAN is required")]
    PanRequired(u8),
    /// The PIN block has the wrong length for its format.
    #[error("an ISO format {format} PIN block is {expected} bytes, got {got}")]
    BlockLength {
        /// Format number.
        format: u8,
        /// Required length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The control field does not name the expected format.
    #[error("control field {found:X} is not ISO format {expected}")]
    ControlField {
        /// Format asked for.
        expected: u8,
        /// Control nibble found.
        found: u8,
    },
    /// The PIN length field is outside 4..=12.
    #[error("PIN length field {0} is outside 4..=12")]
    PinLength(u8),
    /// A PIN digit position holds a non-decimal nibble (wrong key or PAN).
    #[error("PIN digit {position} is not a decimal digit")]
    PinDigit {
        /// Zero-based position within the PIN.
        position: usize,
    },
    /// A fill nibble breaks the format's fill rule (wrong key or PAN).
    #[error("fill nibble {position} breaks the ISO format {format} fill rule")]
    Fill {
        /// Format number.
        format: u8,
        /// Zero-based nibble position in the block.
        position: usize,
    },
    /// The key's algorithm does not fit the format (format 4 is AES only,
    /// formats 0, 1 and 3 are TDES only).
    #[error("ISO format {format} PIN blocks are not enciphered with {algorithm} keys")]
    KeyAlgorithm {
        /// Format number.
        format: u8,
        /// The key's algorithm.
        algorithm: crate::KeyAlgorithm,
    },
    /// The format number is not one of 0, 1, 3, 4.
    #[error("ISO 9564 format {0} is not supported (0, 1, 3 and 4 are)")]
    UnsupportedFormat(u8),
}

/// An ISO 9564 PIN block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Format 0 (ANSI X9.8): F fill, XOR with the PAN block.
    Iso0,
    /// Format 1: transaction-unique fill, no PAN.
    Iso1,
    /// Format 3: random A–F fill, XOR with the PAN block.
    Iso3,
    /// Format 4: AES, 16-byte PIN field enciphered with the PAN field.
    Iso4,
}

impl Format {
    /// The format of number `n`.
    pub fn from_number(n: u8) -> Result<Self, PinBlockError> {
        match n {
            0 => Ok(Self::Iso0),
            1 => Ok(Self::Iso1),
            3 => Ok(Self::Iso3),
            4 => Ok(Self::Iso4),
            _ => Err(PinBlockError::UnsupportedFormat(n)),
        }
    }

    /// The format number (also the control nibble).
    pub fn number(self) -> u8 {
        match self {
            Self::Iso0 => 0,
            Self::Iso1 => 1,
            Self::Iso3 => 3,
            Self::Iso4 => 4,
        }
    }

    /// Block length in bytes: 8, or 16 for format 4.
    pub fn block_len(self) -> usize {
        if self == Self::Iso4 { 16 } else { 8 }
    }

    fn needs_pan(self) -> bool {
        self != Self::Iso1
    }
}

/// A PIN of 4 to 12 digits. Zeroized on drop; `Debug` shows only its length.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Pin {
    digits: [u8; 12],
    len: u8,
}

impl Pin {
    /// Parses a PIN of 4 to 12 ASCII decimal digits.
    pub fn new(pin: &str) -> Result<Self, PinBlockError> {
        let bytes = pin.as_bytes();
        if !(4..=12).contains(&bytes.len()) || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(PinBlockError::InvalidPin);
        }
        let mut digits = [0u8; 12];
        for (d, b) in digits.iter_mut().zip(bytes) {
            *d = b - b'0';
        }
        Ok(Self {
            digits,
            len: bytes.len() as u8,
        })
    }

    /// The PIN digits as ASCII, for the one caller that must see them (the
    /// HSM-side verification or a calculator asked to print them).
    pub fn expose_secret(&self) -> String {
        self.digits().iter().map(|d| char::from(b'0' + d)).collect()
    }

    fn digits(&self) -> &[u8] {
        &self.digits[..usize::from(self.len)]
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({} digits)", self.len)
    }
}

/// A primary account number of 8 to 19 digits. `Debug` and `Display` show
/// it masked (first 6 and last 4 digits).
#[derive(Clone, PartialEq, Eq)]
pub struct Pan {
    digits: [u8; 19],
    len: u8,
}

impl Pan {
    /// Parses a PAN of 8 to 19 ASCII decimal digits.
    pub fn new(pan: &str) -> Result<Self, PinBlockError> {
        let bytes = pan.as_bytes();
        if !(8..=19).contains(&bytes.len()) || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(PinBlockError::InvalidPan);
        }
        let mut digits = [0u8; 19];
        for (d, b) in digits.iter_mut().zip(bytes) {
            *d = b - b'0';
        }
        Ok(Self {
            digits,
            len: bytes.len() as u8,
        })
    }

    fn digits(&self) -> &[u8] {
        &self.digits[..usize::from(self.len)]
    }

    /// Formats 0 and 3: `0000` and the 12 rightmost digits excluding the
    /// check digit (left-padded with zeros when fewer), as 16 nibbles.
    fn format0_block(&self) -> [u8; 8] {
        let body = &self.digits()[..self.digits().len() - 1];
        let take = body.len().min(12);
        let mut nibbles = [0u8; 16];
        nibbles[16 - take..].copy_from_slice(&body[body.len() - take..]);
        pack(&nibbles)
    }

    /// Format 4 PAN field: length indicator (PAN length − 12, 0 when
    /// shorter), the PAN right-justified in at least 12 digits, zero fill.
    fn format4_field(&self) -> [u8; 16] {
        let digits = self.digits();
        let mut nibbles = [0u8; 32];
        nibbles[0] = digits.len().saturating_sub(12) as u8;
        let start = 1 + 12usize.saturating_sub(digits.len());
        nibbles[start..start + digits.len()].copy_from_slice(digits);
        pack(&nibbles)
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.digits();
        for (i, digit) in d.iter().enumerate() {
            if i < 6 || i >= d.len() - 4 {
                write!(f, "{digit}")?;
            } else {
                f.write_str("*")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({self})")
    }
}

/// Packs nibbles (values 0..=15) two per byte.
fn pack<const N: usize>(nibbles: &[u8]) -> [u8; N] {
    debug_assert_eq!(nibbles.len(), 2 * N);
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(nibbles.chunks_exact(2)) {
        *o = (pair[0] << 4) | pair[1];
    }
    out
}

fn unpack<const M: usize>(bytes: &[u8]) -> [u8; M] {
    debug_assert_eq!(bytes.len() * 2, M);
    let mut out = [0u8; M];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = b >> 4;
        pair[1] = b & 0x0F;
    }
    out
}

/// Random bytes for the fill of formats 1, 3 and 4; see [`encode_with_fill`].
pub const FILL_LEN: usize = 16;

/// A clear PIN block (formats 0, 1, 3) or clear format-4 PIN field, zeroized
/// on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClearBlock {
    bytes: [u8; 16],
    len: u8,
}

impl ClearBlock {
    /// The clear block bytes (8, or 16 for a format-4 PIN field).
    pub fn expose_secret(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn new(bytes: &[u8]) -> Self {
        let mut b = [0u8; 16];
        b[..bytes.len()].copy_from_slice(bytes);
        Self {
            bytes: b,
            len: bytes.len() as u8,
        }
    }
}

impl fmt::Debug for ClearBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClearBlock({} bytes)", self.len)
    }
}

fn pan_for(format: Format, pan: Option<&Pan>) -> Result<Option<&Pan>, PinBlockError> {
    match (format.needs_pan(), pan) {
        (true, None) => Err(PinBlockError::PanRequired(format.number())),
        (true, Some(p)) => Ok(Some(p)),
        (false, _) => Ok(None),
    }
}

/// Builds the clear PIN block (formats 0, 1, 3: already XORed with the PAN
/// block) or the clear format-4 PIN field, taking the fill from `fill`:
/// format 1 uses the nibbles of `fill` as its transaction field, format 3
/// maps byte `i` to fill nibble `A + fill[i] mod 6`, format 4 uses the first
/// 8 bytes as its random field. Format 0 ignores `fill`.
pub fn encode_with_fill(
    format: Format,
    pin: &Pin,
    pan: Option<&Pan>,
    fill: &[u8; FILL_LEN],
) -> Result<ClearBlock, PinBlockError> {
    let pan = pan_for(format, pan)?;
    let mut nibbles = [0u8; 16];
    nibbles[0] = format.number();
    nibbles[1] = pin.len;
    let digits = pin.digits();
    nibbles[2..2 + digits.len()].copy_from_slice(digits);
    let fill_nibbles: [u8; 32] = unpack(fill);
    for (i, n) in nibbles.iter_mut().enumerate().skip(2 + digits.len()) {
        *n = match format {
            Format::Iso0 => 0xF,
            Format::Iso1 => fill_nibbles[i],
            Format::Iso3 => 0xA + fill[i] % 6,
            Format::Iso4 => 0xA,
        };
    }
    let mut block: [u8; 8] = pack(&nibbles);
    nibbles.zeroize();
    let out = match (format, pan) {
        (Format::Iso4, _) => {
            let mut field = [0u8; 16];
            field[..8].copy_from_slice(&block);
            field[8..].copy_from_slice(&fill[..8]);
            let out = ClearBlock::new(&field);
            field.zeroize();
            out
        }
        (_, Some(pan)) => {
            xor_into(&mut block, &pan.format0_block());
            ClearBlock::new(&block)
        }
        (_, None) => ClearBlock::new(&block),
    };
    block.zeroize();
    Ok(out)
}

/// [`encode_with_fill`] with fill from the operating system's random source.
pub fn encode(format: Format, pin: &Pin, pan: Option<&Pan>) -> Result<ClearBlock, PinBlockError> {
    let mut fill = [0u8; FILL_LEN];
    crate::random_bytes(&mut fill);
    let out = encode_with_fill(format, pin, pan, &fill);
    fill.zeroize();
    out
}

/// Reads the PIN from a clear block (formats 0, 1, 3) or clear format-4 PIN
/// field, checking the control field, the PIN length, every digit and the
/// format's fill rule.
pub fn decode(format: Format, block: &[u8], pan: Option<&Pan>) -> Result<Pin, PinBlockError> {
    let pan = pan_for(format, pan)?;
    if block.len() != format.block_len() {
        return Err(PinBlockError::BlockLength {
            format: format.number(),
            expected: format.block_len(),
            got: block.len(),
        });
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&block[..8]);
    if let (Format::Iso0 | Format::Iso3, Some(pan)) = (format, pan) {
        xor_into(&mut first, &pan.format0_block());
    }
    let mut nibbles: [u8; 16] = unpack(&first);
    first.zeroize();
    let result = parse_nibbles(format, &nibbles);
    nibbles.zeroize();
    result
}

fn parse_nibbles(format: Format, nibbles: &[u8; 16]) -> Result<Pin, PinBlockError> {
    if nibbles[0] != format.number() {
        return Err(PinBlockError::ControlField {
            expected: format.number(),
            found: nibbles[0],
        });
    }
    let len = nibbles[1];
    if !(4..=12).contains(&len) {
        return Err(PinBlockError::PinLength(len));
    }
    let len = usize::from(len);
    let mut pin = Pin {
        digits: [0; 12],
        len: len as u8,
    };
    for (position, (d, &n)) in pin.digits.iter_mut().zip(&nibbles[2..2 + len]).enumerate() {
        if n > 9 {
            return Err(PinBlockError::PinDigit { position });
        }
        *d = n;
    }
    for (position, &n) in nibbles.iter().enumerate().skip(2 + len) {
        let ok = match format {
            Format::Iso0 => n == 0xF,
            Format::Iso1 => true,
            Format::Iso3 => n >= 0xA,
            Format::Iso4 => n == 0xA,
        };
        if !ok {
            return Err(PinBlockError::Fill {
                format: format.number(),
                position,
            });
        }
    }
    Ok(pin)
}

fn check_key(format: Format, key: &PinKey) -> Result<(), PinBlockError> {
    let algorithm = key.algorithm();
    if (format == Format::Iso4) == algorithm.is_aes() && algorithm != crate::KeyAlgorithm::Des {
        Ok(())
    } else {
        Err(PinBlockError::KeyAlgorithm {
            format: format.number(),
            algorithm,
        })
    }
}

/// Enciphers a clear block from [`encode`] / [`encode_with_fill`] under
/// `key`: TDES-ECB for formats 0, 1, 3; for format 4 (AES) the ISO 9564-1
/// two-pass process: A = E(PIN field), B = A ⊕ PAN field, block = E(B).
pub fn encipher(
    key: &PinKey,
    format: Format,
    clear: &ClearBlock,
    pan: Option<&Pan>,
) -> Result<Vec<u8>, PinBlockError> {
    check_key(format, key)?;
    let pan = pan_for(format, pan)?;
    if clear.expose_secret().len() != format.block_len() {
        return Err(PinBlockError::BlockLength {
            format: format.number(),
            expected: format.block_len(),
            got: clear.expose_secret().len(),
        });
    }
    let cipher = key.0.cipher();
    let mut block = clear.expose_secret().to_vec();
    cipher.encrypt(&mut block);
    if let (Format::Iso4, Some(pan)) = (format, pan) {
        xor_into(&mut block, &pan.format4_field());
        cipher.encrypt(&mut block);
    }
    Ok(block)
}

/// Deciphers an enciphered PIN block under `key` and decodes the PIN,
/// with every check of [`decode`].
pub fn decipher(
    key: &PinKey,
    format: Format,
    block: &[u8],
    pan: Option<&Pan>,
) -> Result<Pin, PinBlockError> {
    check_key(format, key)?;
    let pan = pan_for(format, pan)?;
    if block.len() != format.block_len() {
        return Err(PinBlockError::BlockLength {
            format: format.number(),
            expected: format.block_len(),
            got: block.len(),
        });
    }
    let cipher = key.0.cipher();
    let mut clear = [0u8; 16];
    let clear = &mut clear[..block.len()];
    clear.copy_from_slice(block);
    cipher.decrypt(clear);
    if let (Format::Iso4, Some(pan)) = (format, pan) {
        xor_into(clear, &pan.format4_field());
        cipher.decrypt(clear);
    }
    let result = decode(format, clear, pan);
    clear.zeroize();
    result
}
