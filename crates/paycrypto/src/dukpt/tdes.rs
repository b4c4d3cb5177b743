//! TDES DUKPT, ANSI X9.24-1-2009 (double-length keys).
//!
//! The KSN is 10 bytes: a 59-bit initial key serial number and a 21-bit
//! transaction counter. Keys come from the non-reversible key generation
//! process (NRKGP, X9.24-1 A.2); working keys are variants of the
//! transaction key (X9.24-1-2009 A.4 and Table A-1).

use super::{DukptError, Ladder, walk_counter};
use crate::keys::{
    Bdk, DataKey, DerivationKey, InitialKey, KeyAlgorithm, KeyBytes, KeyError, MacKey, PinKey,
};
use crate::primitives::{BlockCipher, xor_into};

/// KSN length in bytes.
pub const KSN_LEN: usize = 10;
const COUNTER_BITS: u32 = 21;
const COUNTER_MASK: u32 = (1 << COUNTER_BITS) - 1;
/// A counter may have at most this many one bits (X9.24-1 A.2).
const MAX_ONES: u32 = 10;
/// The mask applied to a key before deriving the IPEK's right half and the
/// NRKGP's left half.
const KEY_MASK: [u8; 16] = [
    0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0, 0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0,
];

/// A TDES DUKPT key serial number.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ksn([u8; KSN_LEN]);

impl Ksn {
    /// Parses a KSN. A counter of 0 is accepted (it names the initial KSN,
    /// from which the IPEK is derived); counters with more than 10 one bits
    /// are rejected.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DukptError> {
        let arr: [u8; KSN_LEN] = bytes.try_into().map_err(|_| DukptError::KsnLength {
            generation: "TDES DUKPT",
            expected: KSN_LEN,
            got: bytes.len(),
        })?;
        let ksn = Self(arr);
        let counter = ksn.counter();
        if counter.count_ones() > MAX_ONES {
            return Err(DukptError::InvalidCounter {
                counter,
                reason: "more than 10 bits set",
            });
        }
        Ok(ksn)
    }

    /// The 21-bit transaction counter.
    pub fn counter(&self) -> u32 {
        u32::from_be_bytes([0, self.0[7], self.0[8], self.0[9]]) & COUNTER_MASK
    }

    /// The 10 KSN bytes.
    pub fn as_bytes(&self) -> &[u8; KSN_LEN] {
        &self.0
    }

    /// This KSN with its counter replaced.
    pub fn with_counter(&self, counter: u32) -> Self {
        debug_assert!(counter <= COUNTER_MASK);
        let mut b = self.0;
        let low = (u32::from_be_bytes([0, b[7], b[8], b[9]]) & !COUNTER_MASK) | counter;
        b[7..].copy_from_slice(&low.to_be_bytes()[1..]);
        Self(b)
    }

    /// The rightmost 8 bytes with the counter cleared: the base of the
    /// NRKGP crypto register.
    fn register_base(&self) -> u64 {
        u64::from_be_bytes(self.0[2..].try_into().expect("8 bytes")) & !u64::from(COUNTER_MASK)
    }
}

impl std::fmt::Debug for Ksn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ksn(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))?;
        write!(f, ")")
    }
}

fn require_tdes2(key: &KeyBytes, role: &'static str) -> Result<(), DukptError> {
    if key.algorithm() == KeyAlgorithm::Tdes2 {
        Ok(())
    } else {
        Err(KeyError::Algorithm {
            role,
            algorithm: key.algorithm(),
        }
        .into())
    }
}

fn tdes_key(bytes: &[u8; 16]) -> KeyBytes {
    KeyBytes::new(KeyAlgorithm::Tdes2, bytes).expect("16 bytes")
}

/// Host: the initial PIN encryption key (IPEK) of the terminal whose KSN is
/// `ksn` (its counter is ignored). X9.24-1 A.6: TDES-encrypt the leftmost
/// 8 KSN bytes (counter cleared) under the BDK, then under the BDK ⊕ mask.
pub fn ipek(bdk: &Bdk, ksn: &Ksn) -> Result<InitialKey, DukptError> {
    require_tdes2(&bdk.0, "TDES DUKPT BDK")?;
    let mut left = [0u8; 8];
    left.copy_from_slice(&ksn.0[..8]);
    left[7] &= 0xE0;
    let mut right = left;
    bdk.0.cipher().encrypt(&mut left);
    let mut masked = [0u8; 16];
    masked.copy_from_slice(bdk.0.as_bytes());
    xor_into(&mut masked, &KEY_MASK);
    BlockCipher::new(KeyAlgorithm::Tdes2, &masked).encrypt(&mut right);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&left);
    out[8..].copy_from_slice(&right);
    let key = tdes_key(&out);
    zeroize::Zeroize::zeroize(&mut masked);
    zeroize::Zeroize::zeroize(&mut out);
    Ok(InitialKey(key))
}

/// The non-reversible key generation process (X9.24-1 A.2) applied to
/// `key` with crypto register `register`.
fn nrkgp(key: &KeyBytes, register: u64) -> KeyBytes {
    fn half(key: &[u8], register: u64) -> [u8; 8] {
        let (kl, kr) = key.split_at(8);
        let mut r = register.to_be_bytes();
        xor_into(&mut r, kr);
        BlockCipher::new(KeyAlgorithm::Des, kl).encrypt(&mut r);
        xor_into(&mut r, kr);
        r
    }
    let mut k = [0u8; 16];
    k.copy_from_slice(key.as_bytes());
    let mut right = half(&k, register);
    xor_into(&mut k, &KEY_MASK);
    let mut left = half(&k, register);
    k[..8].copy_from_slice(&left);
    k[8..].copy_from_slice(&right);
    let out = tdes_key(&k);
    zeroize::Zeroize::zeroize(&mut k);
    zeroize::Zeroize::zeroize(&mut left);
    zeroize::Zeroize::zeroize(&mut right);
    out
}

/// Host: the transaction key ("current key") of `ksn` from the IPEK.
pub fn transaction_key(ipek: &InitialKey, ksn: &Ksn) -> Result<DerivationKey, DukptError> {
    require_tdes2(&ipek.0, "TDES DUKPT IPEK")?;
    let base = ksn.register_base();
    let key = walk_counter(&ipek.0, ksn.counter(), COUNTER_BITS, |parent, partial| {
        nrkgp(parent, base | u64::from(partial))
    });
    Ok(DerivationKey(key))
}

/// Host: the transaction key of `ksn` straight from the BDK.
pub fn transaction_key_from_bdk(bdk: &Bdk, ksn: &Ksn) -> Result<DerivationKey, DukptError> {
    transaction_key(&ipek(bdk, ksn)?, ksn)
}

/// A working-key variant of X9.24-1-2009 Table A-1: the transaction key
/// XOR this byte pattern repeated on both halves.
fn variant(tk: &DerivationKey, mask: [u8; 8]) -> Result<[u8; 16], DukptError> {
    require_tdes2(&tk.0, "TDES DUKPT transaction key")?;
    let mut k = [0u8; 16];
    k.copy_from_slice(tk.0.as_bytes());
    xor_into(&mut k[..8], &mask);
    xor_into(&mut k[8..], &mask);
    Ok(k)
}

fn variant_key(tk: &DerivationKey, mask: [u8; 8]) -> Result<KeyBytes, DukptError> {
    let mut k = variant(tk, mask)?;
    let key = tdes_key(&k);
    zeroize::Zeroize::zeroize(&mut k);
    Ok(key)
}

const PIN_VARIANT: [u8; 8] = [0, 0, 0, 0, 0, 0, 0, 0xFF];
const MAC_REQUEST_VARIANT: [u8; 8] = [0, 0, 0, 0, 0, 0, 0xFF, 0];
const MAC_RESPONSE_VARIANT: [u8; 8] = [0, 0, 0, 0, 0xFF, 0, 0, 0];
const DATA_REQUEST_VARIANT: [u8; 8] = [0, 0, 0, 0, 0, 0xFF, 0, 0];
const DATA_RESPONSE_VARIANT: [u8; 8] = [0, 0, 0, 0xFF, 0, 0, 0, 0];

/// Which side of the exchange a MAC or data key protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Terminal to host.
    Request,
    /// Host to terminal.
    Response,
}

/// PIN encryption key: the transaction key with the PIN variant.
pub fn pin_key(tk: &DerivationKey) -> Result<PinKey, DukptError> {
    variant_key(tk, PIN_VARIANT).map(PinKey)
}

/// MAC key for `direction`: the transaction key with the MAC variant.
pub fn mac_key(tk: &DerivationKey, direction: Direction) -> Result<MacKey, DukptError> {
    let mask = match direction {
        Direction::Request => MAC_REQUEST_VARIANT,
        Direction::Response => MAC_RESPONSE_VARIANT,
    };
    variant_key(tk, mask).map(MacKey)
}

/// Data encryption key for `direction` (X9.24-1-2009): the data variant of
/// the transaction key, each half then TDES-encrypted under that variant.
pub fn data_key(tk: &DerivationKey, direction: Direction) -> Result<DataKey, DukptError> {
    let mask = match direction {
        Direction::Request => DATA_REQUEST_VARIANT,
        Direction::Response => DATA_RESPONSE_VARIANT,
    };
    let mut k = variant(tk, mask)?;
    let cipher = BlockCipher::new(KeyAlgorithm::Tdes2, &k);
    cipher.encrypt(&mut k[..8]);
    cipher.encrypt(&mut k[8..]);
    let key = tdes_key(&k);
    zeroize::Zeroize::zeroize(&mut k);
    Ok(DataKey(key))
}

/// Terminal side: the future key registers of one IPEK, one per counter bit.
pub struct Terminal {
    ksn: Ksn,
    ladder: Ladder,
}

impl Terminal {
    /// Loads an IPEK with its initial KSN (counter bits ignored); the first
    /// transaction uses counter 1.
    pub fn load(ipek: InitialKey, initial_ksn: Ksn) -> Result<Self, DukptError> {
        Self::resume(ipek, initial_ksn, 1)
    }

    /// Rebuilds the future key registers of a terminal whose next
    /// transaction uses counter `next`.
    pub fn resume(ipek: InitialKey, initial_ksn: Ksn, next: u32) -> Result<Self, DukptError> {
        require_tdes2(&ipek.0, "TDES DUKPT IPEK")?;
        let ksn = initial_ksn.with_counter(0);
        let base = ksn.register_base();
        let ladder = Ladder::load_at(&ipek.0, COUNTER_BITS, MAX_ONES, next, |parent, counter| {
            nrkgp(parent, base | u64::from(counter))
        })?;
        Ok(Self { ksn, ladder })
    }

    /// The KSN the next transaction will use, or `None` when exhausted.
    pub fn next_ksn(&self) -> Option<Ksn> {
        self.ladder.next_counter().map(|c| self.ksn.with_counter(c))
    }

    /// Starts a transaction: its KSN and transaction key (derive the working
    /// keys with [`pin_key`], [`mac_key`], [`data_key`]). Advances the
    /// counter, skipping counters with more than 10 one bits; fails with
    /// [`DukptError::Exhausted`] after the last counter.
    pub fn next_transaction(&mut self) -> Result<(Ksn, DerivationKey), DukptError> {
        let base = self.ksn.register_base();
        let (counter, key) = self
            .ladder
            .advance(|parent, counter| nrkgp(parent, base | u64::from(counter)))?;
        Ok((self.ksn.with_counter(counter), DerivationKey(key)))
    }
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tdes::Terminal")
            .field("next_ksn", &self.next_ksn())
            .finish_non_exhaustive()
    }
}
