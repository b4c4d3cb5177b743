//! Message security of the nexo Sale-to-POI JSON API as Adyen terminals
//! speak it on the local network ("Terminal API, local, encrypted"), laid
//! out exactly as Adyen's client libraries (`@adyen/api-library`,
//! `NexoCrypto`) produce and check it, so that they interoperate:
//!
//! - key material: PBKDF2-HMAC-SHA1(passphrase as Latin-1, salt
//!   `AdyenNexoV1Salt`, 4000 iterations) → 80 bytes: HMAC key (0..32),
//!   AES key (32..64), IV (64..80);
//! - per message a random 16-byte nonce; the CBC IV is IV ⊕ nonce;
//! - `NexoBlob` = base64(AES-256-CBC-PKCS7(plaintext JSON));
//! - `Hmac` = base64(HMAC-SHA256(HMAC key, plaintext JSON));
//! - envelope: `{"SaleToPOIRequest": {"MessageHeader": <clear copy of the
//!   plaintext's header>, "NexoBlob": ..., "SecurityTrailer":
//!   {"AdyenCryptoVersion": 1, "KeyIdentifier": ..., "KeyVersion": ...,
//!   "Nonce": base64, "Hmac": base64}}}` (or `SaleToPOIResponse`).
//!
//! The plaintext is the whole message, `{"SaleToPOIRequest": {...}}`. The
//! clear `MessageHeader` of the envelope is not authenticated: a receiver
//! routes on it but acts only on the decrypted message.
//!
//! Deriving the key material is slow by design, so [`NexoKey`] is a value
//! to derive once per key and keep (it is zeroized on drop).

use std::fmt;

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cipher::block_padding::Pkcs7;
use cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// PBKDF2 salt fixed by the scheme.
pub const SALT: &[u8] = b"AdyenNexoV1Salt";
/// PBKDF2 iteration count fixed by the scheme.
pub const ITERATIONS: u32 = 4000;
/// `AdyenCryptoVersion` of this scheme.
pub const CRYPTO_VERSION: u64 = 1;
/// Largest envelope or plaintext accepted, in bytes. nexo messages are a
/// few kilobytes (receipts included); the bound keeps a hostile peer from
/// making us decode and decrypt arbitrarily large inputs.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Nonce length in bytes.
pub const NONCE_LEN: usize = 16;

/// A message could not be secured or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NexoError {
    /// The passphrase has a character outside Latin-1, which Adyen's
    /// libraries cannot represent either.
    #[error("the passphrase must be Latin-1 text")]
    Passphrase,
    /// Input larger than [`MAX_MESSAGE_LEN`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_LEN}-byte limit")]
    TooLarge(usize),
    /// The plaintext or envelope is not the JSON shape required.
    #[error("{0}")]
    Shape(String),
    /// A base64 field does not decode.
    #[error("{0} is not valid base64")]
    Base64(&'static str),
    /// The nonce is not 16 bytes.
    #[error("Nonce is {0} bytes, expected 16")]
    NonceLength(usize),
    /// The envelope names another key or crypto version than ours.
    #[error("message is secured with {found}, expected {expected}")]
    KeyMismatch {
        /// What the envelope says.
        found: String,
        /// What this key is.
        expected: String,
    },
    /// The ciphertext did not decrypt to a correctly padded plaintext, or the
    /// HMAC does not match it: wrong passphrase or a modified message. One
    /// error for both so that the padding check is no oracle.
    #[error("message authentication failed (wrong passphrase or modified message)")]
    Authentication,
    /// The authenticated plaintext is not UTF-8 JSON.
    #[error("decrypted message is not UTF-8 JSON")]
    Plaintext,
}

/// The 80 bytes of key material derived from a passphrase.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct KeyMaterial {
    hmac_key: [u8; 32],
    cipher_key: [u8; 32],
    iv: [u8; 16],
}

/// A nexo security key: derived key material with the identifier and
/// version that travel in every `SecurityTrailer`. Derive once, reuse.
#[derive(Clone)]
pub struct NexoKey {
    material: KeyMaterial,
    key_identifier: String,
    key_version: u64,
}

impl fmt::Debug for NexoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NexoKey")
            .field("key_identifier", &self.key_identifier)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

impl NexoKey {
    /// Derives the key material from `passphrase` (PBKDF2, 4000 rounds).
    pub fn derive(
        passphrase: &str,
        key_identifier: &str,
        key_version: u64,
    ) -> Result<Self, NexoError> {
        // Adyen's libraries turn the passphrase into bytes as Latin-1
        // (Node's "binary" encoding); UTF-8 would differ above U+007F.
        let mut pass: Vec<u8> = passphrase
            .chars()
            .map(|c| u8::try_from(u32::from(c)).map_err(|_| NexoError::Passphrase))
            .collect::<Result<_, _>>()?;
        let mut out = [0u8; 80];
        pbkdf2::pbkdf2_hmac::<Sha1>(&pass, SALT, ITERATIONS, &mut out);
        pass.zeroize();
        let mut material = KeyMaterial {
            hmac_key: [0; 32],
            cipher_key: [0; 32],
            iv: [0; 16],
        };
        material.hmac_key.copy_from_slice(&out[..32]);
        material.cipher_key.copy_from_slice(&out[32..64]);
        material.iv.copy_from_slice(&out[64..]);
        out.zeroize();
        Ok(Self {
            material,
            key_identifier: key_identifier.to_owned(),
            key_version,
        })
    }

    /// The key identifier.
    pub fn key_identifier(&self) -> &str {
        &self.key_identifier
    }

    /// The key version.
    pub fn key_version(&self) -> u64 {
        self.key_version
    }

    fn iv_for(&self, nonce: &[u8; NONCE_LEN]) -> [u8; 16] {
        let mut iv = self.material.iv;
        crate::primitives::xor_into(&mut iv, nonce);
        iv
    }

    fn hmac(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.material.hmac_key)
            .expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

fn shape(msg: &str) -> NexoError {
    NexoError::Shape(msg.to_owned())
}

/// The single top-level member of a nexo message: its name
/// (`SaleToPOIRequest` or `SaleToPOIResponse`) and body.
fn message_root(value: &Value) -> Result<(&str, &Map<String, Value>), NexoError> {
    let obj = value
        .as_object()
        .ok_or_else(|| shape("a nexo message is a JSON object"))?;
    let mut members = obj.iter();
    let (name, body) = match (members.next(), members.next()) {
        (Some(m), None) => m,
        _ => {
            return Err(shape(
                "a nexo message has exactly one member, SaleToPOIRequest or SaleToPOIResponse",
            ));
        }
    };
    if name != "SaleToPOIRequest" && name != "SaleToPOIResponse" {
        return Err(NexoError::Shape(format!(
            "unexpected top-level member {name:?}"
        )));
    }
    let body = body
        .as_object()
        .ok_or_else(|| NexoError::Shape(format!("{name} is not an object")))?;
    Ok((name, body))
}

/// Secures a plaintext nexo message (`{"SaleToPOIRequest": {...}}` or a
/// response) with a random nonce; returns the envelope JSON.
pub fn encrypt(key: &NexoKey, plaintext: &[u8]) -> Result<String, NexoError> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::random_bytes(&mut nonce);
    encrypt_with_nonce(key, plaintext, &nonce)
}

/// [`encrypt`] with a caller-chosen nonce (tests and reproducible traces;
/// never reuse a nonce with the same key in production).
pub fn encrypt_with_nonce(
    key: &NexoKey,
    plaintext: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Result<String, NexoError> {
    if plaintext.len() > MAX_MESSAGE_LEN {
        return Err(NexoError::TooLarge(plaintext.len()));
    }
    let value: Value = serde_json::from_slice(plaintext)
        .map_err(|e| NexoError::Shape(format!("plaintext is not JSON: {e}")))?;
    let (name, body) = message_root(&value)?;
    let header = body
        .get("MessageHeader")
        .ok_or_else(|| NexoError::Shape(format!("{name} has no MessageHeader")))?;
    let mut iv = key.iv_for(nonce);
    let blob = cbc::Encryptor::<Aes256>::new_from_slices(&key.material.cipher_key, &iv)
        .expect("fixed key and IV lengths")
        .encrypt_padded_vec::<Pkcs7>(plaintext);
    iv.zeroize();
    let hmac = key.hmac(plaintext);
    let envelope = serde_json::json!({
        name: {
            "MessageHeader": header,
            "NexoBlob": B64.encode(blob),
            "SecurityTrailer": {
                "AdyenCryptoVersion": CRYPTO_VERSION,
                "KeyIdentifier": key.key_identifier,
                "KeyVersion": key.key_version,
                "Nonce": B64.encode(nonce),
                "Hmac": B64.encode(hmac),
            }
        }
    });
    Ok(envelope.to_string())
}

fn b64_field(body: &Map<String, Value>, field: &'static str) -> Result<Vec<u8>, NexoError> {
    let text = body
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| NexoError::Shape(format!("{field} is missing or not a string")))?;
    B64.decode(text).map_err(|_| NexoError::Base64(field))
}

/// Opens a secured envelope: checks the key identifier, key version and
/// crypto version, decrypts, and verifies the HMAC in constant time. Returns
/// the plaintext message JSON.
pub fn decrypt(key: &NexoKey, envelope: &[u8]) -> Result<String, NexoError> {
    if envelope.len() > MAX_MESSAGE_LEN {
        return Err(NexoError::TooLarge(envelope.len()));
    }
    let value: Value = serde_json::from_slice(envelope)
        .map_err(|e| NexoError::Shape(format!("envelope is not JSON: {e}")))?;
    let (name, body) = message_root(&value)?;
    let trailer = body
        .get("SecurityTrailer")
        .and_then(Value::as_object)
        .ok_or_else(|| NexoError::Shape(format!("{name} has no SecurityTrailer object")))?;
    let found_id = trailer.get("KeyIdentifier").and_then(Value::as_str);
    let found_version = trailer.get("KeyVersion").and_then(Value::as_u64);
    let found_crypto = trailer.get("AdyenCryptoVersion").and_then(Value::as_u64);
    if found_id != Some(key.key_identifier.as_str())
        || found_version != Some(key.key_version)
        || found_crypto != Some(CRYPTO_VERSION)
    {
        return Err(NexoError::KeyMismatch {
            found: format!(
                "key {:?} version {:?}, crypto version {:?}",
                found_id, found_version, found_crypto
            ),
            expected: format!(
                "key {:?} version {}, crypto version {CRYPTO_VERSION}",
                key.key_identifier, key.key_version
            ),
        });
    }
    let nonce = b64_field(trailer, "Nonce")?;
    let nonce: [u8; NONCE_LEN] = nonce
        .as_slice()
        .try_into()
        .map_err(|_| NexoError::NonceLength(nonce.len()))?;
    let received_hmac = b64_field(trailer, "Hmac")?;
    let blob = b64_field(body, "NexoBlob")?;
    let mut iv = key.iv_for(&nonce);
    let decrypted = cbc::Decryptor::<Aes256>::new_from_slices(&key.material.cipher_key, &iv)
        .expect("fixed key and IV lengths")
        .decrypt_padded_vec::<Pkcs7>(&blob);
    iv.zeroize();
    let mut plaintext = decrypted.map_err(|_| NexoError::Authentication)?;
    let expected = key.hmac(&plaintext);
    if !bool::from(expected.as_slice().ct_eq(&received_hmac)) {
        plaintext.zeroize();
        return Err(NexoError::Authentication);
    }
    let text = String::from_utf8(plaintext).map_err(|e| {
        let mut bytes = e.into_bytes();
        bytes.zeroize();
        NexoError::Plaintext
    })?;
    if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
        return Err(NexoError::Plaintext);
    }
    Ok(text)
}
