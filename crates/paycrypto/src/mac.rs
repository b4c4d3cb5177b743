//! Message authentication codes used on payment links:
//! ISO/IEC 9797-1 MAC algorithm 1 (CBC-MAC; ANSI X9.9 with a single-DES key)
//! and algorithm 3 (retail MAC, ANSI X9.19), padding methods 1 and 2;
//! AES-CMAC (NIST SP 800-38B, RFC 4493); and the UnionPay POS "ECB" MAC.

use cmac::Mac as _;
use des::Des;
use retail_mac::{KeyInit as _, RetailMac};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::keys::{KeyAlgorithm, MacKey};
use crate::primitives::{BlockCipher, cmac, xor_into};

/// A MAC could not be computed or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// The key's algorithm does not fit the MAC algorithm.
    #[error("{mac} does not take a {algorithm} key")]
    KeyAlgorithm {
        /// MAC algorithm.
        mac: &'static str,
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
    },
    /// The MAC to verify has a length this algorithm never produces.
    #[error("a {mac} MAC is {min} to {max} bytes, got {got}")]
    Length {
        /// MAC algorithm.
        mac: &'static str,
        /// Shortest truncation accepted.
        min: usize,
        /// Full length.
        max: usize,
        /// Length given.
        got: usize,
    },
    /// The MAC does not match the message.
    #[error("MAC mismatch")]
    Mismatch,
}

/// ISO/IEC 9797-1 padding method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Method 1: zero bytes up to a whole number of blocks (one zero block
    /// for an empty message).
    Method1,
    /// Method 2: one `80` byte, then zero bytes up to a whole block.
    Method2,
}

/// Pads `data` to whole 8-byte blocks.
fn pad(data: &[u8], padding: Padding) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(data);
    if padding == Padding::Method2 {
        out.push(0x80);
    }
    if out.is_empty() || out.len() % 8 != 0 {
        out.resize(out.len().div_ceil(8).max(1) * 8, 0);
    }
    out
}

/// The MAC algorithms of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// ISO 9797-1 algorithm 1: CBC-MAC under DES (X9.9) or TDES.
    Iso9797Alg1(Padding),
    /// ISO 9797-1 algorithm 3: retail MAC (X9.19) under a 2-key TDES key.
    RetailMac(Padding),
    /// AES-CMAC (or TDES-CMAC with a TDES key).
    Cmac,
    /// UnionPay POS terminal MAC ("ECB algorithm").
    CupEcb,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Iso9797Alg1(_) => "ISO 9797-1 algorithm 1",
            Self::RetailMac(_) => "ISO 9797-1 algorithm 3",
            Self::Cmac => "CMAC",
            Self::CupEcb => "CUP ECB MAC",
        }
    }

    fn check_key(self, key: &MacKey) -> Result<(), MacError> {
        let algorithm = key.algorithm();
        let ok = match self {
            Self::Iso9797Alg1(_) | Self::CupEcb => !algorithm.is_aes(),
            Self::RetailMac(_) => algorithm == KeyAlgorithm::Tdes2,
            Self::Cmac => algorithm != KeyAlgorithm::Des,
        };
        if ok {
            Ok(())
        } else {
            Err(MacError::KeyAlgorithm {
                mac: self.name(),
                algorithm,
            })
        }
    }

    /// Full MAC length in bytes for a key of `alg`.
    fn full_len(self, alg: KeyAlgorithm) -> usize {
        match self {
            Self::Cmac => alg.block_size(),
            _ => 8,
        }
    }
}

/// Computes the full-length MAC of `data` (8 bytes, or 16 for AES-CMAC).
pub fn generate(key: &MacKey, algorithm: Algorithm, data: &[u8]) -> Result<Vec<u8>, MacError> {
    algorithm.check_key(key)?;
    Ok(match algorithm {
        Algorithm::Iso9797Alg1(padding) => cbc_mac(key, &pad(data, padding)).to_vec(),
        Algorithm::RetailMac(padding) => {
            // retail-mac zero-pads a partial last block itself; feeding it
            // whole padded blocks makes both padding methods explicit.
            let mut mac = RetailMac::<Des>::new_from_slice(key.expose_secret())
                .expect("2-key TDES length checked");
            mac.update(&pad(data, padding));
            mac.finalize().into_bytes().to_vec()
        }
        Algorithm::Cmac => {
            let (tag, len) = cmac(key.algorithm(), key.expose_secret(), data);
            tag[..len].to_vec()
        }
        Algorithm::CupEcb => cup_ecb(key, data).to_vec(),
    })
}

/// Verifies `mac` over `data` in constant time. A MAC truncated to its
/// leftmost 4 or more bytes is accepted (ISO 8583 field 64 carries 8 bytes
/// of an AES-CMAC; many networks carry 4 bytes of a retail MAC).
pub fn verify(key: &MacKey, algorithm: Algorithm, data: &[u8], mac: &[u8]) -> Result<(), MacError> {
    let mut expected = generate(key, algorithm, data)?;
    let full = algorithm.full_len(key.algorithm());
    if !(4..=full).contains(&mac.len()) {
        expected.zeroize();
        return Err(MacError::Length {
            mac: algorithm.name(),
            min: 4,
            max: full,
            got: mac.len(),
        });
    }
    let ok: bool = expected[..mac.len()].ct_eq(mac).into();
    expected.zeroize();
    if ok { Ok(()) } else { Err(MacError::Mismatch) }
}

/// ISO 9797-1 algorithm 1 over already padded data.
fn cbc_mac(key: &MacKey, padded: &[u8]) -> [u8; 8] {
    let cipher: BlockCipher = key.0.cipher();
    let mut state = [0u8; 8];
    for block in padded.chunks_exact(8) {
        xor_into(&mut state, block);
        cipher.encrypt(&mut state);
    }
    state
}

/// Upper-case hex of 8 bytes as 16 ASCII bytes.
fn hex_ascii(bytes: &[u8; 8]) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = [0u8; 16];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0F)];
    }
    out
}

/// The UnionPay POS terminal MAC ("ECB algorithm" of the China UnionPay POS
/// terminal application specification, MAC calculation section):
///
/// 1. zero-pad the message to 8-byte blocks and XOR all blocks together;
/// 2. expand the 8-byte result to 16 upper-case hex ASCII characters;
/// 3. encrypt the first 8 characters under the MAK (DES for a single-length
///    MAK, TDES for a double- or triple-length one);
/// 4. XOR the result with the last 8 characters and encrypt again;
/// 5. expand that to 16 hex characters: the MAC is the first 8 (as ASCII).
fn cup_ecb(key: &MacKey, data: &[u8]) -> [u8; 8] {
    let cipher = key.0.cipher();
    let mut acc = [0u8; 8];
    for block in data.chunks(8) {
        xor_into(&mut acc[..block.len()], block);
    }
    let expanded = hex_ascii(&acc);
    let mut left = [0u8; 8];
    left.copy_from_slice(&expanded[..8]);
    cipher.encrypt(&mut left);
    xor_into(&mut left, &expanded[8..]);
    cipher.encrypt(&mut left);
    let mut mac = [0u8; 8];
    mac.copy_from_slice(&hex_ascii(&left)[..8]);
    mac
}
