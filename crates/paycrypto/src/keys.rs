//! Key types: one type per key role, so that a MAC key cannot be passed where
//! a PIN key belongs. Every key is zeroized on drop and its `Debug` output
//! shows only the algorithm and the key check value.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::primitives::{BlockCipher, cmac};

/// Block cipher and key length of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// Single DES, 8 bytes (ANSI X9.9 MACs and CUP single-length MAKs only).
    Des,
    /// Two-key triple DES, 16 bytes.
    Tdes2,
    /// Three-key triple DES, 24 bytes.
    Tdes3,
    /// AES-128, 16 bytes.
    Aes128,
    /// AES-192, 24 bytes.
    Aes192,
    /// AES-256, 32 bytes.
    Aes256,
}

impl KeyAlgorithm {
    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::Des => 8,
            Self::Tdes2 | Self::Aes128 => 16,
            Self::Tdes3 | Self::Aes192 => 24,
            Self::Aes256 => 32,
        }
    }

    /// Security strength in bits (NIST SP 800-57 part 1): DES 56, 2-key
    /// TDES 80, 3-key TDES 112, AES its key length.
    pub const fn strength_bits(self) -> u32 {
        match self {
            Self::Des => 56,
            Self::Tdes2 => 80,
            Self::Tdes3 => 112,
            Self::Aes128 => 128,
            Self::Aes192 => 192,
            Self::Aes256 => 256,
        }
    }

    /// Whether this is an AES key.
    pub const fn is_aes(self) -> bool {
        matches!(self, Self::Aes128 | Self::Aes192 | Self::Aes256)
    }

    /// Cipher block size in bytes (8 for DES family, 16 for AES).
    pub const fn block_size(self) -> usize {
        if self.is_aes() { 16 } else { 8 }
    }

    /// The AES algorithm for a key of `len` bytes.
    pub fn aes_for_len(len: usize) -> Result<Self, KeyError> {
        match len {
            16 => Ok(Self::Aes128),
            24 => Ok(Self::Aes192),
            32 => Ok(Self::Aes256),
            _ => Err(KeyError::Length {
                algorithm: "AES",
                len,
            }),
        }
    }

    /// The DES-family algorithm for a key of `len` bytes (8, 16 or 24).
    pub fn des_for_len(len: usize) -> Result<Self, KeyError> {
        match len {
            8 => Ok(Self::Des),
            16 => Ok(Self::Tdes2),
            24 => Ok(Self::Tdes3),
            _ => Err(KeyError::Length {
                algorithm: "DES/TDES",
                len,
            }),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Des => "DES",
            Self::Tdes2 => "TDES-2KEY",
            Self::Tdes3 => "TDES-3KEY",
            Self::Aes128 => "AES-128",
            Self::Aes192 => "AES-192",
            Self::Aes256 => "AES-256",
        })
    }
}

/// A key could not be built or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The byte length does not fit the algorithm.
    #[error("a {algorithm} key cannot be {len} bytes long")]
    Length {
        /// Algorithm family asked for.
        algorithm: &'static str,
        /// Length given.
        len: usize,
    },
    /// The algorithm is not allowed for this key role.
    #[error("a {role} cannot be a {algorithm} key")]
    Algorithm {
        /// Role of the key.
        role: &'static str,
        /// Algorithm given.
        algorithm: KeyAlgorithm,
    },
}

/// Key bytes with their algorithm; the one place key material is held.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct KeyBytes {
    bytes: [u8; 32],
    #[zeroize(skip)]
    alg: KeyAlgorithm,
}

impl KeyBytes {
    pub(crate) fn new(alg: KeyAlgorithm, key: &[u8]) -> Result<Self, KeyError> {
        if key.len() != alg.key_len() {
            let algorithm = if alg.is_aes() { "AES" } else { "DES/TDES" };
            return Err(KeyError::Length {
                algorithm,
                len: key.len(),
            });
        }
        let mut bytes = [0u8; 32];
        bytes[..key.len()].copy_from_slice(key);
        Ok(Self { bytes, alg })
    }

    pub(crate) fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.alg.key_len()]
    }

    pub(crate) fn cipher(&self) -> BlockCipher {
        BlockCipher::new(self.alg, self.as_bytes())
    }

    pub(crate) fn kcv(&self) -> [u8; 3] {
        key_check_value(self.alg, self.as_bytes())
    }

    pub(crate) fn ct_eq(&self, other: &Self) -> bool {
        self.alg == other.alg && bool::from(self.as_bytes().ct_eq(other.as_bytes()))
    }
}

/// Key check value (first 3 bytes), as X9.24-1-2017 defines it per family:
/// DES/TDES encrypt a block of zeros; AES computes AES-CMAC over a 16-byte
/// block of zeros (the "CMAC" KCV method of TR-31's KC block, algorithm 01).
pub fn key_check_value(alg: KeyAlgorithm, key: &[u8]) -> [u8; 3] {
    let mut out = [0u8; 3];
    if alg.is_aes() {
        let (tag, _) = cmac(alg, key, &[0u8; 16]);
        out.copy_from_slice(&tag[..3]);
    } else {
        let mut block = [0u8; 8];
        BlockCipher::new(alg, key).encrypt(&mut block);
        out.copy_from_slice(&block[..3]);
    }
    out
}

/// Legacy AES key check value: first 3 bytes of AES-ECB over 16 zero bytes,
/// still printed by some HSMs and key ceremonies.
pub fn key_check_value_aes_ecb(alg: KeyAlgorithm, key: &[u8]) -> Result<[u8; 3], KeyError> {
    if !alg.is_aes() {
        return Err(KeyError::Algorithm {
            role: "legacy AES KCV input",
            algorithm: alg,
        });
    }
    let mut block = [0u8; 16];
    BlockCipher::new(alg, key).encrypt(&mut block);
    Ok([block[0], block[1], block[2]])
}

/// Defines one key-role type around [`KeyBytes`].
macro_rules! key_role {
    ($(#[$doc:meta])* $name:ident, $role:literal, allowed = $allowed:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(pub(crate) KeyBytes);

        impl $name {
            /// Builds the key from raw bytes of the given algorithm.
            pub fn new(algorithm: KeyAlgorithm, key: &[u8]) -> Result<Self, KeyError> {
                let allowed: &[KeyAlgorithm] = $allowed;
                if !allowed.contains(&algorithm) {
                    return Err(KeyError::Algorithm { role: $role, algorithm });
                }
                KeyBytes::new(algorithm, key).map(Self)
            }

            /// The key's algorithm.
            pub fn algorithm(&self) -> KeyAlgorithm {
                self.0.algorithm()
            }

            /// Key check value (see [`key_check_value`]).
            pub fn kcv(&self) -> [u8; 3] {
                self.0.kcv()
            }

            /// The clear key bytes, for a calculator that was asked to print
            /// them or for handing to another cryptographic API.
            pub fn expose_secret(&self) -> &[u8] {
                self.0.as_bytes()
            }

            /// Constant-time comparison of two keys of this role.
            pub fn ct_eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let kcv = self.kcv();
                write!(
                    f,
                    concat!(stringify!($name), "({}, kcv {:02X}{:02X}{:02X})"),
                    self.algorithm(),
                    kcv[0],
                    kcv[1],
                    kcv[2]
                )
            }
        }
    };
}

const TDES: &[KeyAlgorithm] = &[KeyAlgorithm::Tdes2, KeyAlgorithm::Tdes3];
const AES: &[KeyAlgorithm] = &[
    KeyAlgorithm::Aes128,
    KeyAlgorithm::Aes192,
    KeyAlgorithm::Aes256,
];
const TDES_AES: &[KeyAlgorithm] = &[
    KeyAlgorithm::Tdes2,
    KeyAlgorithm::Tdes3,
    KeyAlgorithm::Aes128,
    KeyAlgorithm::Aes192,
    KeyAlgorithm::Aes256,
];
const ANY: &[KeyAlgorithm] = &[
    KeyAlgorithm::Des,
    KeyAlgorithm::Tdes2,
    KeyAlgorithm::Tdes3,
    KeyAlgorithm::Aes128,
    KeyAlgorithm::Aes192,
    KeyAlgorithm::Aes256,
];

key_role!(
    /// Base derivation key of a DUKPT family (host side only).
    Bdk, "BDK", allowed = TDES_AES
);
key_role!(
    /// A terminal's DUKPT initial key (AES DUKPT "initial key", TDES "IPEK").
    InitialKey, "DUKPT initial key", allowed = TDES_AES
);
key_role!(
    /// A DUKPT derivation key: the transaction key of one KSN, from which the
    /// working keys of that transaction are derived.
    DerivationKey, "DUKPT derivation key", allowed = TDES_AES
);
key_role!(
    /// PIN encryption key (ISO 9564 PIN blocks).
    PinKey, "PIN key", allowed = TDES_AES
);
key_role!(
    /// MAC key (ISO 9797-1, CUP MAC, AES-CMAC). Single DES is accepted for the
    /// legacy X9.9 and CUP single-length MAK algorithms.
    MacKey, "MAC key", allowed = ANY
);
key_role!(
    /// Data encryption key.
    DataKey, "data key", allowed = TDES_AES
);
key_role!(
    /// TR-31 key block protection key.
    Kbpk, "KBPK", allowed = TDES_AES
);

impl Kbpk {
    /// Whether the KBPK is TDES (versions A, B) rather than AES (version D).
    pub(crate) fn is_tdes(&self) -> bool {
        TDES.contains(&self.algorithm())
    }
}

impl Bdk {
    /// Whether the BDK is an AES key (X9.24-3) rather than TDES (X9.24-1).
    pub fn is_aes(&self) -> bool {
        AES.contains(&self.algorithm())
    }
}
