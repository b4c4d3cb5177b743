//! AES DUKPT, ANSI X9.24-3-2017.
//!
//! Every key is derived by AES-ECB encrypting 16-byte derivation data under
//! the parent key (two blocks, counters 1 and 2, for keys longer than 128
//! bits). Derivation data: version `01`, block counter, key usage (2 bytes),
//! algorithm (2 bytes), key length in bits (2 bytes), then either the 8-byte
//! initial key ID (initial key) or the ID's last 4 bytes and the 32-bit
//! transaction counter (all other keys).

use super::{DukptError, Ladder, walk_counter};
use crate::keys::{
    Bdk, DataKey, DerivationKey, InitialKey, KeyAlgorithm, KeyBytes, MacKey, PinKey,
};

/// KSN length: 8-byte initial key ID and 4-byte transaction counter.
pub const KSN_LEN: usize = 12;
/// Counter width in bits.
const COUNTER_BITS: u32 = 32;
/// A counter may have at most this many one bits (X9.24-3 §6.1).
const MAX_ONES: u32 = 16;

const USAGE_DERIVATION: u16 = 0x8000;
const USAGE_INITIAL_KEY: u16 = 0x8001;

/// The usage of a working key, with its X9.24-3 key-usage indicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum WorkingKeyUsage {
    /// PIN encryption.
    PinEncryption = 0x1000,
    /// MAC generation.
    MacGeneration = 0x2000,
    /// MAC verification.
    MacVerification = 0x2001,
    /// MAC generation and verification.
    MacBoth = 0x2002,
    /// Data encryption, encrypt direction.
    DataEncrypt = 0x3000,
    /// Data encryption, decrypt direction.
    DataDecrypt = 0x3001,
    /// Data encryption, both directions.
    DataBoth = 0x3002,
}

/// An AES DUKPT key serial number: initial key ID and transaction counter.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ksn([u8; KSN_LEN]);

impl Ksn {
    /// Parses and validates a KSN: 12 bytes, counter non-zero with at most
    /// 16 one bits (a terminal never uses any other counter).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DukptError> {
        let arr: [u8; KSN_LEN] = bytes.try_into().map_err(|_| DukptError::KsnLength {
            generation: "AES DUKPT",
            expected: KSN_LEN,
            got: bytes.len(),
        })?;
        let ksn = Self(arr);
        let counter = ksn.counter();
        if counter == 0 {
            return Err(DukptError::InvalidCounter {
                counter,
                reason: "counter 0 is never used",
            });
        }
        if counter.count_ones() > MAX_ONES {
            return Err(DukptError::InvalidCounter {
                counter,
                reason: "more than 16 bits set",
            });
        }
        Ok(ksn)
    }

    fn new(initial_key_id: [u8; 8], counter: u32) -> Self {
        let mut b = [0u8; KSN_LEN];
        b[..8].copy_from_slice(&initial_key_id);
        b[8..].copy_from_slice(&counter.to_be_bytes());
        Self(b)
    }

    /// The 8-byte initial key ID (BDK ID and derivation ID).
    pub fn initial_key_id(&self) -> [u8; 8] {
        self.0[..8].try_into().expect("8 bytes")
    }

    /// The 32-bit transaction counter.
    pub fn counter(&self) -> u32 {
        u32::from_be_bytes(self.0[8..].try_into().expect("4 bytes"))
    }

    /// The 12 KSN bytes.
    pub fn as_bytes(&self) -> &[u8; KSN_LEN] {
        &self.0
    }

    fn id_suffix(&self) -> [u8; 4] {
        self.0[4..8].try_into().expect("4 bytes")
    }
}

impl std::fmt::Debug for Ksn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ksn(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))?;
        write!(f, ")")
    }
}

/// X9.24-3 algorithm indicator and key length in bits of a derived key.
fn algorithm_fields(alg: KeyAlgorithm) -> Result<(u16, u16), DukptError> {
    Ok(match alg {
        KeyAlgorithm::Tdes2 => (0x0000, 128),
        KeyAlgorithm::Tdes3 => (0x0001, 192),
        KeyAlgorithm::Aes128 => (0x0002, 128),
        KeyAlgorithm::Aes192 => (0x0003, 192),
        KeyAlgorithm::Aes256 => (0x0004, 256),
        KeyAlgorithm::Des => {
            return Err(crate::keys::KeyError::Algorithm {
                role: "AES DUKPT key",
                algorithm: alg,
            }
            .into());
        }
    })
}

/// One X9.24-3 derivation: `parent` encrypts the derivation data for a key
/// of algorithm `out`, one AES block per 16 bytes of output.
fn derive(parent: &KeyBytes, usage: u16, out: KeyAlgorithm, data: [u8; 8]) -> KeyBytes {
    let (alg_code, bits) = algorithm_fields(out).expect("checked by caller");
    let cipher = parent.cipher();
    let mut material = [0u8; 32];
    let len = out.key_len();
    for (i, chunk) in material[..len].chunks_mut(16).enumerate() {
        let mut dd = [0u8; 16];
        dd[0] = 0x01;
        dd[1] = u8::try_from(i + 1).expect("at most 2 blocks");
        dd[2..4].copy_from_slice(&usage.to_be_bytes());
        dd[4..6].copy_from_slice(&alg_code.to_be_bytes());
        dd[6..8].copy_from_slice(&bits.to_be_bytes());
        dd[8..].copy_from_slice(&data);
        cipher.encrypt(&mut dd);
        chunk.copy_from_slice(&dd[..chunk.len()]);
        zeroize::Zeroize::zeroize(&mut dd);
    }
    let key = KeyBytes::new(out, &material[..len]).expect("length from algorithm");
    zeroize::Zeroize::zeroize(&mut material);
    key
}

fn counter_data(id_suffix: [u8; 4], counter: u32) -> [u8; 8] {
    let mut d = [0u8; 8];
    d[..4].copy_from_slice(&id_suffix);
    d[4..].copy_from_slice(&counter.to_be_bytes());
    d
}

fn require_aes(key: &KeyBytes, role: &'static str) -> Result<(), DukptError> {
    if key.algorithm().is_aes() {
        Ok(())
    } else {
        Err(crate::keys::KeyError::Algorithm {
            role,
            algorithm: key.algorithm(),
        }
        .into())
    }
}

/// Host: the initial key of the terminal with `initial_key_id`, derived from
/// an AES-128/192/256 BDK. The initial key has the BDK's algorithm.
pub fn initial_key(bdk: &Bdk, initial_key_id: [u8; 8]) -> Result<InitialKey, DukptError> {
    require_aes(&bdk.0, "AES DUKPT BDK")?;
    Ok(InitialKey(derive(
        &bdk.0,
        USAGE_INITIAL_KEY,
        bdk.algorithm(),
        initial_key_id,
    )))
}

/// Host: the transaction (derivation) key of `ksn` from the initial key.
pub fn transaction_key(ik: &InitialKey, ksn: &Ksn) -> Result<DerivationKey, DukptError> {
    require_aes(&ik.0, "AES DUKPT initial key")?;
    let alg = ik.algorithm();
    let suffix = ksn.id_suffix();
    let key = walk_counter(&ik.0, ksn.counter(), COUNTER_BITS, |parent, partial| {
        derive(parent, USAGE_DERIVATION, alg, counter_data(suffix, partial))
    });
    Ok(DerivationKey(key))
}

/// Host: the transaction key of `ksn` straight from the BDK.
pub fn transaction_key_from_bdk(bdk: &Bdk, ksn: &Ksn) -> Result<DerivationKey, DukptError> {
    transaction_key(&initial_key(bdk, ksn.initial_key_id())?, ksn)
}

/// The working key of `usage` and algorithm `alg` for the transaction of
/// `ksn`, derived from that transaction's derivation key. X9.24-3 forbids a
/// working key of greater security strength than the derivation key.
fn working_key(
    tk: &DerivationKey,
    ksn: &Ksn,
    usage: WorkingKeyUsage,
    alg: KeyAlgorithm,
) -> Result<KeyBytes, DukptError> {
    require_aes(&tk.0, "AES DUKPT derivation key")?;
    algorithm_fields(alg)?;
    if alg.strength_bits() > tk.algorithm().strength_bits() {
        return Err(crate::keys::KeyError::Algorithm {
            role: "working key stronger than its derivation key",
            algorithm: alg,
        }
        .into());
    }
    Ok(derive(
        &tk.0,
        usage as u16,
        alg,
        counter_data(ksn.id_suffix(), ksn.counter()),
    ))
}

/// Which MAC working key to derive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacDirection {
    /// The key that generates MACs (the terminal's requests).
    Generate,
    /// The key that verifies MACs.
    Verify,
    /// One key for both.
    Both,
}

/// Which data encryption working key to derive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirection {
    /// Encrypt direction.
    Encrypt,
    /// Decrypt direction.
    Decrypt,
    /// Both directions.
    Both,
}

/// PIN encryption key of the transaction, of algorithm `alg` (normally the
/// derivation key's own algorithm).
pub fn pin_key(tk: &DerivationKey, ksn: &Ksn, alg: KeyAlgorithm) -> Result<PinKey, DukptError> {
    working_key(tk, ksn, WorkingKeyUsage::PinEncryption, alg).map(PinKey)
}

/// MAC key of the transaction for `direction`, of algorithm `alg`.
pub fn mac_key(
    tk: &DerivationKey,
    ksn: &Ksn,
    direction: MacDirection,
    alg: KeyAlgorithm,
) -> Result<MacKey, DukptError> {
    let usage = match direction {
        MacDirection::Generate => WorkingKeyUsage::MacGeneration,
        MacDirection::Verify => WorkingKeyUsage::MacVerification,
        MacDirection::Both => WorkingKeyUsage::MacBoth,
    };
    working_key(tk, ksn, usage, alg).map(MacKey)
}

/// Data encryption key of the transaction for `direction`, of algorithm `alg`.
pub fn data_key(
    tk: &DerivationKey,
    ksn: &Ksn,
    direction: DataDirection,
    alg: KeyAlgorithm,
) -> Result<DataKey, DukptError> {
    let usage = match direction {
        DataDirection::Encrypt => WorkingKeyUsage::DataEncrypt,
        DataDirection::Decrypt => WorkingKeyUsage::DataDecrypt,
        DataDirection::Both => WorkingKeyUsage::DataBoth,
    };
    working_key(tk, ksn, usage, alg).map(DataKey)
}

/// Terminal side: holds the intermediate derivation keys of one initial key
/// and hands out one transaction at a time. The initial key itself is not
/// kept once the register is filled.
pub struct Terminal {
    initial_key_id: [u8; 8],
    algorithm: KeyAlgorithm,
    ladder: Ladder,
}

impl Terminal {
    /// Loads an initial key (as injected into the device) with its ID; the
    /// first transaction uses counter 1.
    pub fn load(ik: InitialKey, initial_key_id: [u8; 8]) -> Result<Self, DukptError> {
        Self::resume(ik, initial_key_id, 1)
    }

    /// Rebuilds the register of a terminal whose next transaction uses
    /// counter `next` (e.g. a simulated terminal restored from its journal).
    pub fn resume(ik: InitialKey, initial_key_id: [u8; 8], next: u32) -> Result<Self, DukptError> {
        require_aes(&ik.0, "AES DUKPT initial key")?;
        let algorithm = ik.algorithm();
        let suffix = Ksn::new(initial_key_id, 0).id_suffix();
        let ladder = Ladder::load_at(&ik.0, COUNTER_BITS, MAX_ONES, next, |parent, counter| {
            derive(
                parent,
                USAGE_DERIVATION,
                algorithm,
                counter_data(suffix, counter),
            )
        })?;
        Ok(Self {
            initial_key_id,
            algorithm,
            ladder,
        })
    }

    /// The KSN the next transaction will use, or `None` when exhausted.
    pub fn next_ksn(&self) -> Option<Ksn> {
        self.ladder
            .next_counter()
            .map(|c| Ksn::new(self.initial_key_id, c))
    }

    /// Starts a transaction: returns its KSN and derivation key (derive the
    /// working keys with [`pin_key`], [`mac_key`], [`data_key`]) and advances
    /// the counter, skipping counters with more than 16 one bits. Fails with
    /// [`DukptError::Exhausted`] once no counter is left.
    pub fn next_transaction(&mut self) -> Result<(Ksn, DerivationKey), DukptError> {
        let suffix = Ksn::new(self.initial_key_id, 0).id_suffix();
        let algorithm = self.algorithm;
        let (counter, key) = self.ladder.advance(|parent, counter| {
            derive(
                parent,
                USAGE_DERIVATION,
                algorithm,
                counter_data(suffix, counter),
            )
        })?;
        Ok((Ksn::new(self.initial_key_id, counter), DerivationKey(key)))
    }
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("aes::Terminal")
            .field("next_ksn", &self.next_ksn())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}
