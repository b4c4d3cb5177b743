//! The closed-loop issuer's card data: PANs become keyed tokens for lookup
//! and sealed values for recovery, PINs become keyed check values. Neither
//! a PAN nor a PIN is ever stored in clear.

use hmac::{Hmac, KeyInit, Mac};
use ledger::{AccountId, Currency};
use pki::{MasterKey, SealError, Secret};
use sha2::{Digest, Sha256};
use std::path::Path;
use zeroize::Zeroizing;

const ISSUER_KEY_FILE: &str = "issuer.key.sealed";
const ISSUER_PURPOSE: &str = "issuer root key";
const PAN_PURPOSE: &str = "pan";

/// Keys of the issuer: one for PAN tokens, one for PIN check values, both
/// derived from a root key sealed in the host's data directory.
pub struct IssuerKeys {
    token: Zeroizing<[u8; 32]>,
    pin: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuerKeys(redacted)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl IssuerKeys {
    /// Loads the root key from `data_dir`, creating it on first use.
    pub fn load_or_create(data_dir: &Path, master: &MasterKey) -> Result<Self, SealError> {
        let path = data_dir.join(ISSUER_KEY_FILE);
        let root = if path.exists() {
            master.open_file(ISSUER_PURPOSE, &path)?
        } else {
            let root = Secret::random(32);
            master.seal_to_file(ISSUER_PURPOSE, root.expose(), &path)?;
            root
        };
        Ok(Self::from_root(root.expose()))
    }

    /// Derives the working keys from a root key.
    pub fn from_root(root: &[u8]) -> Self {
        IssuerKeys {
            token: Zeroizing::new(hmac(root, &[b"posnet pan token"])),
            pin: Zeroizing::new(hmac(root, &[b"posnet pin check"])),
        }
    }

    /// The token of a PAN: what the host stores and looks cards up by.
    pub fn token(&self, pan: &str) -> String {
        hex::encode(&hmac(self.token.as_ref(), &[pan.as_bytes()])[..16])
    }

    /// The token of a wallet: its journal rows' card token (daily limits).
    pub fn wallet_token(&self, number: paycrypto::paycode::WalletNumber) -> String {
        self.token(&format!("wallet:{number}"))
    }

    /// The PIN check value of a card's PIN, bound to the card's token.
    pub fn pin_check(&self, token: &str, pin: &str) -> [u8; 32] {
        hmac(self.pin.as_ref(), &[token.as_bytes(), b":", pin.as_bytes()])
    }
}

/// Seals a PAN for storage.
pub fn seal_pan(master: &MasterKey, pan: &str) -> Vec<u8> {
    master.seal(PAN_PURPOSE, pan.as_bytes())
}

/// A stable ledger account id for `(role, key)`, e.g. `("merchant", "M00000000000001")`.
pub fn account_id(role: &str, key: &str) -> AccountId {
    let digest = Sha256::digest([role.as_bytes(), b":", key.as_bytes()].concat());
    AccountId(u128::from_be_bytes(
        digest[..16].try_into().expect("16 bytes"),
    ))
}

/// The funding account of a currency: where loaded value comes from.
pub fn funding_account(currency: Currency) -> AccountId {
    account_id("funding", &currency.0.to_string())
}

/// Whether a PAN passes the Luhn check.
pub fn luhn_valid(pan: &str) -> bool {
    let digits: Option<Vec<u32>> = pan.chars().rev().map(|c| c.to_digit(10)).collect();
    let Some(digits) = digits else { return false };
    if !(12..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}
