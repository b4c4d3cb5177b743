//! ANSI X9.143 / ASC X9 TR-31 key blocks: wrap and unwrap of versions B
//! (TDES key derivation binding) and D (AES key derivation binding), and
//! unwrap of version A (TDES variant binding, for legacy peers).
//!
//! A key block is ASCII: a 16-character header (plus optional blocks), the
//! hex of the encrypted key field and the hex of the MAC. The key field is
//! a 2-byte key length in bits, the key, and random padding. Versions B and
//! D derive an encryption key (KBEK) and an authentication key (KBAK) from
//! the KBPK with CMAC, MAC the header and the clear key field with CMAC and
//! encrypt the key field in CBC mode with the MAC as IV.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::keys::{
    Bdk, DataKey, InitialKey, Kbpk, KeyAlgorithm, KeyBytes, KeyError, MacKey, PinKey,
};
use crate::primitives::{BlockCipher, cmac, xor_into};

/// Longest key block accepted (4 decimal digits of length field).
pub const MAX_BLOCK_LEN: usize = 9999;
const HEADER_LEN: usize = 16;

/// A key block could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tr31Error {
    /// The block is not printable ASCII, or shorter than a header.
    #[error("key block is malformed: {0}")]
    Malformed(&'static str),
    /// The length field disagrees with the block's length.
    #[error("key block length field says {declared}, block is {actual} characters")]
    LengthField {
        /// Length in the header.
        declared: usize,
        /// Actual length.
        actual: usize,
    },
    /// A header field holds a value TR-31 does not define.
    #[error("header field {field} has invalid value {value:?}")]
    HeaderField {
        /// Field name.
        field: &'static str,
        /// Value found.
        value: String,
    },
    /// The header's fields contradict each other.
    #[error("header is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// An optional block is malformed.
    #[error("optional block {index} is malformed: {reason}")]
    OptionalBlock {
        /// Zero-based index.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The version is not supported for this operation.
    #[error("key block version {0:?} is not supported here")]
    UnsupportedVersion(char),
    /// The KBPK's algorithm does not fit the version.
    #[error("version {version} key blocks need a {needed} KBPK, got {got}")]
    KbpkAlgorithm {
        /// Version.
        version: char,
        /// What is needed.
        needed: &'static str,
        /// The KBPK's algorithm.
        got: KeyAlgorithm,
    },
    /// The MAC does not match: wrong KBPK or a modified block.
    #[error("key block MAC mismatch (wrong KBPK or modified block)")]
    MacMismatch,
    /// The decrypted key field is inconsistent.
    #[error("decrypted key field is invalid: {0}")]
    KeyField(&'static str),
    /// The wrapped key does not fit the header.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// The key's usage does not allow the requested role.
    #[error("key usage {usage} cannot be used as {role}")]
    Usage {
        /// Key usage from the header.
        usage: String,
        /// Role asked for.
        role: &'static str,
    },
}

/// Key block version (binding method).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// A: TDES variant binding (unwrap only).
    A,
    /// B: TDES key derivation binding.
    B,
    /// D: AES key derivation binding.
    D,
}

impl Version {
    fn from_char(c: char) -> Result<Self, Tr31Error> {
        match c {
            'A' => Ok(Self::A),
            'B' => Ok(Self::B),
            'D' => Ok(Self::D),
            other => Err(Tr31Error::UnsupportedVersion(other)),
        }
    }

    /// The version's header character.
    pub fn as_char(self) -> char {
        match self {
            Self::A => 'A',
            Self::B => 'B',
            Self::D => 'D',
        }
    }

    fn mac_len(self) -> usize {
        match self {
            Self::A => 4,
            Self::B => 8,
            Self::D => 16,
        }
    }

    fn block_size(self) -> usize {
        if self == Self::D { 16 } else { 8 }
    }
}

/// Key usages of TR-31:2018 table 6 that posnet accepts, with the modes of
/// use each allows.
const USAGES: &[(&str, &str)] = &[
    ("B0", "X"),    // BDK
    ("B1", "X"),    // initial DUKPT key
    ("B2", "X"),    // base key variant key
    ("C0", "CGVN"), // card verification key
    ("D0", "BDEN"), // symmetric data encryption
    ("D2", "BDEN"), // decimalization table data key
    ("E0", "X"),    // EMV application cryptograms
    ("E1", "X"),    // EMV secure messaging, confidentiality
    ("E2", "X"),    // EMV secure messaging, integrity
    ("E3", "X"),    // EMV data authentication code
    ("E4", "X"),    // EMV dynamic numbers
    ("E5", "X"),    // EMV card personalization
    ("E6", "X"),    // EMV other
    ("I0", "N"),    // initialization vector
    ("K0", "BDEN"), // key encryption or wrapping
    ("K1", "BDEN"), // TR-31 key block protection key
    ("M0", "CGVN"), // ISO 16609 MAC
    ("M1", "CGVN"), // ISO 9797-1 MAC algorithm 1
    ("M2", "CGVN"), // ISO 9797-1 MAC algorithm 2
    ("M3", "CGVN"), // ISO 9797-1 MAC algorithm 3
    ("M4", "CGVN"), // ISO 9797-1 MAC algorithm 4
    ("M5", "CGVN"), // ISO 9797-1:1999 MAC algorithm 5
    ("M6", "CGVN"), // ISO 9797-1:2011 MAC algorithm 5 (CMAC)
    ("M7", "CGVN"), // HMAC
    ("M8", "CGVN"), // ISO 9797-1:2011 MAC algorithm 6
    ("P0", "BDEN"), // PIN encryption
    ("V0", "CGVN"), // PIN verification, other
    ("V1", "CGVN"), // PIN verification, IBM 3624
    ("V2", "CGVN"), // PIN verification, VISA PVV
];

const ALGORITHMS: &str = "ADEHRST";
const MODES: &str = "BCDEGNSTVXY";
const EXPORTABILITY: &str = "ENS";

/// One optional header block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionalBlock {
    /// Two-character block ID (e.g. `KS`, `KC`).
    pub id: String,
    /// Block data (printable ASCII).
    pub data: String,
}

/// A TR-31 key block header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Binding method.
    pub version: Version,
    /// Key usage, e.g. `P0`.
    pub key_usage: String,
    /// Algorithm of the wrapped key: `A` AES, `T` TDES, `D` DES, ...
    pub algorithm: char,
    /// Mode of use, e.g. `E` encrypt only.
    pub mode_of_use: char,
    /// Key version number (`00` when unversioned).
    pub key_version: String,
    /// Exportability: `E` exportable, `N` non-exportable, `S` sensitive.
    pub exportability: char,
    /// Optional blocks (a `PB` pad block is added and removed automatically).
    pub optional_blocks: Vec<OptionalBlock>,
}

impl Header {
    /// A header without optional blocks; fields are checked by [`wrap`].
    pub fn new(
        version: Version,
        key_usage: &str,
        algorithm: char,
        mode_of_use: char,
        key_version: &str,
        exportability: char,
    ) -> Self {
        Self {
            version,
            key_usage: key_usage.to_owned(),
            algorithm,
            mode_of_use,
            key_version: key_version.to_owned(),
            exportability,
            optional_blocks: Vec::new(),
        }
    }

    /// Checks every field and their consistency (usage against mode of use
    /// and algorithm).
    pub fn validate(&self) -> Result<(), Tr31Error> {
        let field = |field: &'static str, value: String| Tr31Error::HeaderField { field, value };
        let modes = USAGES
            .iter()
            .find(|(u, _)| *u == self.key_usage)
            .map(|(_, m)| *m)
            .ok_or_else(|| field("key usage", self.key_usage.clone()))?;
        if !ALGORITHMS.contains(self.algorithm) {
            return Err(field("algorithm", self.algorithm.to_string()));
        }
        if !MODES.contains(self.mode_of_use) {
            return Err(field("mode of use", self.mode_of_use.to_string()));
        }
        if self.key_version.len() != 2
            || !self.key_version.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(field("key version number", self.key_version.clone()));
        }
        if !EXPORTABILITY.contains(self.exportability) {
            return Err(field("exportability", self.exportability.to_string()));
        }
        if !modes.contains(self.mode_of_use) {
            return Err(Tr31Error::Inconsistent(
                "mode of use not allowed for this key usage",
            ));
        }
        if !"ADT".contains(self.algorithm) && self.key_usage != "M7" {
            return Err(Tr31Error::Inconsistent(
                "symmetric key usage with an asymmetric algorithm",
            ));
        }
        if self.key_usage == "M7" && self.algorithm != 'H' {
            return Err(Tr31Error::Inconsistent(
                "HMAC key usage M7 needs algorithm H",
            ));
        }
        Ok(())
    }

    /// Whether the wrapped key may be exported under another KEK.
    pub fn is_exportable(&self) -> bool {
        self.exportability != 'N'
    }

    /// Header text with the given total block length, padding the optional
    /// blocks to the version's block size with a `PB` block.
    fn render(&self, total_len: usize) -> Result<String, Tr31Error> {
        let mut blocks = String::new();
        let mut count = 0usize;
        for (index, b) in self.optional_blocks.iter().enumerate() {
            let bad = |reason| Tr31Error::OptionalBlock { index, reason };
            if b.id.len() != 2 || !b.id.bytes().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad("ID is not two alphanumeric characters"));
            }
            if b.id == "PB" {
                return Err(bad("the PB pad block is added automatically"));
            }
            if !b.data.bytes().all(|c| (0x20..0x7F).contains(&c)) {
                return Err(bad("data is not printable ASCII"));
            }
            let len = b.data.len() + 4;
            if len > 0xFF {
                return Err(bad("data longer than 251 characters"));
            }
            blocks.push_str(&format!("{}{:02X}{}", b.id, len, b.data));
            count += 1;
        }
        let bs = self.version.block_size();
        if !blocks.len().is_multiple_of(bs) {
            let pad = (bs - (blocks.len() + 4) % bs) % bs;
            blocks.push_str(&format!("PB{:02X}{}", pad + 4, "0".repeat(pad)));
            count += 1;
        }
        if count > 99 {
            return Err(Tr31Error::Malformed("more than 99 optional blocks"));
        }
        Ok(format!(
            "{}{:04}{}{}{}{}{}{:02}00{}",
            self.version.as_char(),
            total_len,
            self.key_usage,
            self.algorithm,
            self.mode_of_use,
            self.key_version,
            self.exportability,
            count,
            blocks
        ))
    }

    /// Parses the header at the start of a key block or of a header
    /// template (as a calculator takes it); returns it and the header text's
    /// length (fixed part plus optional blocks, `PB` dropped). The length
    /// field is not checked here, nor are the field values ([`validate`]).
    ///
    /// [`validate`]: Header::validate
    pub fn parse(block: &str) -> Result<(Self, usize), Tr31Error> {
        let b = block.as_bytes();
        if !b.iter().all(|c| (0x20..0x7F).contains(c)) {
            return Err(Tr31Error::Malformed("not printable ASCII"));
        }
        if b.len() < HEADER_LEN {
            return Err(Tr31Error::Malformed("shorter than a 16-character header"));
        }
        let version = Version::from_char(char::from(b[0]))?;
        let text = |r: std::ops::Range<usize>| block[r].to_owned();
        let count = decimal(&block[12..14]).ok_or_else(|| Tr31Error::HeaderField {
            field: "number of optional blocks",
            value: text(12..14),
        })?;
        if &block[14..16] != "00" {
            return Err(Tr31Error::HeaderField {
                field: "reserved",
                value: text(14..16),
            });
        }
        let mut header = Self {
            version,
            key_usage: text(5..7),
            algorithm: char::from(b[7]),
            mode_of_use: char::from(b[8]),
            key_version: text(9..11),
            exportability: char::from(b[11]),
            optional_blocks: Vec::new(),
        };
        let mut pos = HEADER_LEN;
        // Bounded: at most 99 blocks, each advancing `pos` by at least 4.
        for index in 0..count {
            let bad = |reason| Tr31Error::OptionalBlock { index, reason };
            let id = block
                .get(pos..pos + 2)
                .ok_or(bad("truncated ID"))?
                .to_owned();
            let len_hex = block.get(pos + 2..pos + 4).ok_or(bad("truncated length"))?;
            let mut len =
                usize::from_str_radix(len_hex, 16).map_err(|_| bad("length is not hex"))?;
            let mut data_start = pos + 4;
            if len == 0 {
                // Extended length: 2 hex digits giving the length of the length.
                let ll = block
                    .get(pos + 4..pos + 6)
                    .ok_or(bad("truncated extended length"))?;
                let ll = usize::from_str_radix(ll, 16).map_err(|_| bad("length is not hex"))?;
                if !(1..=4).contains(&ll) {
                    return Err(bad("extended length of length outside 1..=4"));
                }
                let l = block
                    .get(pos + 6..pos + 6 + ll)
                    .ok_or(bad("truncated extended length"))?;
                len = usize::from_str_radix(l, 16).map_err(|_| bad("length is not hex"))?;
                data_start = pos + 6 + ll;
            }
            if len < data_start - pos {
                return Err(bad("length shorter than its own fields"));
            }
            let end = pos.checked_add(len).ok_or(bad("length overflows"))?;
            let data = block
                .get(data_start..end)
                .ok_or(bad("data runs past the block"))?;
            if id != "PB" {
                header.optional_blocks.push(OptionalBlock {
                    id,
                    data: data.to_owned(),
                });
            }
            pos = end;
        }
        Ok((header, pos))
    }
}

/// An unwrapped key with its header. Convert it to a key role with the
/// method matching its usage; the key bytes are zeroized on drop.
#[derive(Clone)]
pub struct KeyBlock {
    /// The authenticated header.
    pub header: Header,
    key: KeyBytes,
}

impl fmt::Debug for KeyBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kcv = self.key.kcv();
        f.debug_struct("KeyBlock")
            .field("header", &self.header)
            .field(
                "kcv",
                &format_args!("{:02X}{:02X}{:02X}", kcv[0], kcv[1], kcv[2]),
            )
            .finish()
    }
}

impl KeyBlock {
    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.key.algorithm()
    }

    /// The clear key bytes (for a calculator asked to print them).
    pub fn expose_secret(&self) -> &[u8] {
        self.key.as_bytes()
    }

    fn role(&self, usages: &[&str], role: &'static str) -> Result<KeyBytes, Tr31Error> {
        if usages.contains(&self.header.key_usage.as_str()) {
            Ok(self.key.clone())
        } else {
            Err(Tr31Error::Usage {
                usage: self.header.key_usage.clone(),
                role,
            })
        }
    }

    /// The key as a PIN encryption key (usage `P0`).
    pub fn pin_key(&self) -> Result<PinKey, Tr31Error> {
        Ok(PinKey::new(
            self.algorithm(),
            self.role(&["P0"], "a PIN key")?.as_bytes(),
        )?)
    }

    /// The key as a MAC key (usages `M0`–`M8`).
    pub fn mac_key(&self) -> Result<MacKey, Tr31Error> {
        const MAC: &[&str] = &["M0", "M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8"];
        Ok(MacKey::new(
            self.algorithm(),
            self.role(MAC, "a MAC key")?.as_bytes(),
        )?)
    }

    /// The key as a data encryption key (usage `D0`).
    pub fn data_key(&self) -> Result<DataKey, Tr31Error> {
        Ok(DataKey::new(
            self.algorithm(),
            self.role(&["D0"], "a data key")?.as_bytes(),
        )?)
    }

    /// The key as a BDK (usage `B0`).
    pub fn bdk(&self) -> Result<Bdk, Tr31Error> {
        Ok(Bdk::new(
            self.algorithm(),
            self.role(&["B0"], "a BDK")?.as_bytes(),
        )?)
    }

    /// The key as a DUKPT initial key (usage `B1`).
    pub fn initial_key(&self) -> Result<InitialKey, Tr31Error> {
        Ok(InitialKey::new(
            self.algorithm(),
            self.role(&["B1"], "a DUKPT initial key")?.as_bytes(),
        )?)
    }

    /// The key as a KBPK (usage `K0` or `K1`).
    pub fn kbpk(&self) -> Result<Kbpk, Tr31Error> {
        Ok(Kbpk::new(
            self.algorithm(),
            self.role(&["K0", "K1"], "a KBPK")?.as_bytes(),
        )?)
    }
}

/// The algorithm of a wrapped key from its header letter and length.
fn wrapped_algorithm(letter: char, len: usize) -> Result<KeyAlgorithm, Tr31Error> {
    Ok(match letter {
        'A' => KeyAlgorithm::aes_for_len(len)?,
        'T' if len != 8 => KeyAlgorithm::des_for_len(len)?,
        'D' if len == 8 => KeyAlgorithm::Des,
        _ => {
            return Err(Tr31Error::KeyField(
                "key length does not fit the header's algorithm",
            ));
        }
    })
}

/// KBEK and KBAK of versions B and D: CMAC under the KBPK of derivation data
/// `counter ‖ usage (0000 enc, 0001 MAC) ‖ 00 ‖ algorithm ‖ length in bits`.
fn derive_binding_keys(kbpk: &Kbpk) -> (KeyBytes, KeyBytes) {
    let alg = kbpk.algorithm();
    let (alg_code, bits): (u16, u16) = match alg {
        KeyAlgorithm::Tdes2 => (0x0000, 128),
        KeyAlgorithm::Tdes3 => (0x0001, 192),
        KeyAlgorithm::Aes128 => (0x0002, 128),
        KeyAlgorithm::Aes192 => (0x0003, 192),
        KeyAlgorithm::Aes256 => (0x0004, 256),
        KeyAlgorithm::Des => unreachable!("KBPK role excludes single DES"),
    };
    let derive = |usage: u8| {
        let mut material = [0u8; 48];
        let mut filled = 0;
        let mut counter = 1u8;
        // Bounded: at most 3 CMAC calls (3-key TDES, 8 bytes each).
        while filled < alg.key_len() {
            let data = [
                counter,
                0,
                usage,
                0,
                (alg_code >> 8) as u8,
                alg_code as u8,
                (bits >> 8) as u8,
                bits as u8,
            ];
            let (tag, n) = cmac(alg, kbpk.expose_secret(), &data);
            material[filled..filled + n].copy_from_slice(&tag[..n]);
            filled += n;
            counter += 1;
        }
        let key = KeyBytes::new(alg, &material[..alg.key_len()]).expect("length from algorithm");
        material.zeroize();
        key
    };
    (derive(0), derive(1))
}

fn check_kbpk(version: Version, kbpk: &Kbpk) -> Result<(), Tr31Error> {
    let ok = match version {
        Version::A | Version::B => kbpk.is_tdes(),
        Version::D => kbpk.algorithm().is_aes(),
    };
    if ok {
        Ok(())
    } else {
        let needed = if version == Version::D { "AES" } else { "TDES" };
        Err(Tr31Error::KbpkAlgorithm {
            version: version.as_char(),
            needed,
            got: kbpk.algorithm(),
        })
    }
}

/// A field of ASCII decimal digits only (`str::parse` would accept `+1`).
fn decimal(field: &str) -> Option<usize> {
    field
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| field.parse().ok())
        .flatten()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, Tr31Error> {
    if !s.len().is_multiple_of(2) {
        return Err(Tr31Error::Malformed("odd number of hex digits"));
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or(Tr31Error::Malformed("key data or MAC is not hex"))
        })
        .collect()
}

/// Wraps `key` (the clear key bytes, whose algorithm is the header's) under
/// `kbpk` as a version B or D key block. The key length is hidden by
/// padding to the longest key of its algorithm family; padding is random.
pub fn wrap(kbpk: &Kbpk, header: &Header, key: &[u8]) -> Result<String, Tr31Error> {
    let mut pad = [0u8; 48];
    crate::random_bytes(&mut pad);
    let out = wrap_with_padding(kbpk, header, key, &pad);
    pad.zeroize();
    out
}

/// [`wrap`] with caller-supplied padding bytes (for reproducible tests).
pub fn wrap_with_padding(
    kbpk: &Kbpk,
    header: &Header,
    key: &[u8],
    padding: &[u8; 48],
) -> Result<String, Tr31Error> {
    header.validate()?;
    let version = header.version;
    if version == Version::A {
        return Err(Tr31Error::UnsupportedVersion('A'));
    }
    check_kbpk(version, kbpk)?;
    let key_alg = wrapped_algorithm(header.algorithm, key.len())?;
    let masked = key.len().max(if key_alg.is_aes() { 32 } else { 24 });
    let bs = version.block_size();
    let field_len = (2 + masked).div_ceil(bs) * bs;
    let mut field = vec![0u8; field_len];
    field[..2].copy_from_slice(&((key.len() * 8) as u16).to_be_bytes());
    field[2..2 + key.len()].copy_from_slice(key);
    field[2 + key.len()..].copy_from_slice(&padding[..field_len - 2 - key.len()]);

    let mac_len = version.mac_len();
    // The header's length field counts the whole block, whose length does
    // not depend on that field's value: render once to measure.
    let header_len = header.render(0)?.len();
    let total = header_len + 2 * field_len + 2 * mac_len;
    if total > MAX_BLOCK_LEN {
        field.zeroize();
        return Err(Tr31Error::Malformed(
            "key block longer than 9999 characters",
        ));
    }
    let header_text = header.render(total)?;

    let (kbek, kbak) = derive_binding_keys(kbpk);
    let mut mac_input = header_text.as_bytes().to_vec();
    mac_input.extend_from_slice(&field);
    let (tag, n) = cmac(kbak.algorithm(), kbak.as_bytes(), &mac_input);
    mac_input.zeroize();
    debug_assert_eq!(n, mac_len);
    let mac = &tag[..mac_len];
    kbek.cipher().cbc_encrypt(mac, &mut field);
    let block = format!("{header_text}{}{}", hex_upper(&field), hex_upper(mac));
    debug_assert_eq!(block.len(), total);
    Ok(block)
}

/// Unwraps a version A, B or D key block under `kbpk`: checks the length
/// field, the header, the MAC (in constant time) and the key field.
pub fn unwrap(kbpk: &Kbpk, block: &str) -> Result<KeyBlock, Tr31Error> {
    if !block.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return Err(Tr31Error::Malformed("not printable ASCII"));
    }
    if block.len() > MAX_BLOCK_LEN {
        return Err(Tr31Error::Malformed("longer than 9999 characters"));
    }
    let (header, header_len) = Header::parse(block)?;
    if header_len % header.version.block_size() != 0 {
        return Err(Tr31Error::Malformed(
            "header is not a whole number of cipher blocks",
        ));
    }
    let declared = decimal(&block[1..5]).ok_or_else(|| Tr31Error::HeaderField {
        field: "key block length",
        value: block[1..5].to_owned(),
    })?;
    if declared != block.len() {
        return Err(Tr31Error::LengthField {
            declared,
            actual: block.len(),
        });
    }
    header.validate()?;
    let version = header.version;
    check_kbpk(version, kbpk)?;
    let bs = version.block_size();
    let mac_hex_len = 2 * version.mac_len();
    let body = &block[header_len..];
    if body.len() < mac_hex_len + 2 * bs {
        return Err(Tr31Error::Malformed("no room for key data and MAC"));
    }
    let (data_hex, mac_hex) = body.split_at(body.len() - mac_hex_len);
    let mut data = unhex(data_hex)?;
    let received_mac = unhex(mac_hex)?;
    if data.len() % bs != 0 {
        return Err(Tr31Error::Malformed(
            "key data is not a whole number of cipher blocks",
        ));
    }
    let header_text = &block.as_bytes()[..header_len];
    let mac_ok = match version {
        Version::A => {
            // Variant binding: KBEK = KBPK ⊕ 45.., KBAK = KBPK ⊕ 4D..; MAC is
            // TDES CBC-MAC over header and encrypted key data; the key data
            // is TDES-CBC with the first 8 header characters as IV.
            let variant = |v: u8| {
                let mut k = kbpk.expose_secret().to_vec();
                k.iter_mut().for_each(|b| *b ^= v);
                let c = BlockCipher::new(kbpk.algorithm(), &k);
                k.zeroize();
                c
            };
            let kbak = variant(0x4D);
            let mut state = [0u8; 8];
            for chunk in header_text.chunks(8).chain(data.chunks(8)) {
                xor_into(&mut state, chunk);
                kbak.encrypt(&mut state);
            }
            let ok: bool = state[..4].ct_eq(&received_mac).into();
            if ok {
                variant(0x45).cbc_decrypt(&header_text[..8], &mut data);
            }
            ok
        }
        Version::B | Version::D => {
            let (kbek, kbak) = derive_binding_keys(kbpk);
            kbek.cipher().cbc_decrypt(&received_mac, &mut data);
            let mut mac_input = header_text.to_vec();
            mac_input.extend_from_slice(&data);
            let (tag, n) = cmac(kbak.algorithm(), kbak.as_bytes(), &mac_input);
            mac_input.zeroize();
            tag[..n].ct_eq(&received_mac).into()
        }
    };
    if !mac_ok {
        data.zeroize();
        return Err(Tr31Error::MacMismatch);
    }
    let result = parse_key_field(&header, &data);
    data.zeroize();
    Ok(KeyBlock {
        header,
        key: result?,
    })
}

fn parse_key_field(header: &Header, data: &[u8]) -> Result<KeyBytes, Tr31Error> {
    let bits = usize::from(u16::from_be_bytes([data[0], data[1]]));
    if bits % 8 != 0 {
        return Err(Tr31Error::KeyField("key length is not whole bytes"));
    }
    let len = bits / 8;
    let key = data
        .get(2..2 + len)
        .ok_or(Tr31Error::KeyField("key length exceeds key data"))?;
    let alg = wrapped_algorithm(header.algorithm, len)?;
    Ok(KeyBytes::new(alg, key)?)
}
