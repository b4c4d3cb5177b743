//! Payment cryptography for posnet: the keys and cryptograms that make a
//! terminal trustworthy, shared by the host and the terminal.
//!
//! - [`dukpt`]: AES DUKPT (ANSI X9.24-3-2017) and TDES DUKPT (X9.24-1-2009),
//!   host and terminal sides.
//! - [`pinblock`]: ISO 9564-1 PIN blocks, formats 0, 1, 3 and 4.
//! - [`mac`]: ISO 9797-1 MAC algorithms 1 and 3 (ANSI X9.9 / X9.19), AES-CMAC
//!   and the UnionPay POS "ECB" MAC.
//! - [`tr31`]: ANSI TR-31 key blocks, versions A (unwrap), B and D.
//! - [`keys`]: one type per key role, zeroized on drop, redacted in `Debug`,
//!   and key check values.
//! - [`nexo`]: the message security of the nexo Sale-to-POI JSON API as Adyen
//!   terminals speak it locally.
//! - [`totp`]: one-time codes from an authenticator app (RFC 6238), each
//!   accepted once: the supervisor's code and the back office's second
//!   factor.
//! - [`paycode`]: wallet payment codes (prefix, wallet number, 8-digit
//!   TOTP), as a wallet app shows them and the host checks them.
//!
//! The primitives (AES, DES/TDES, CMAC, HMAC, SHA-1/SHA-256, PBKDF2, CBC and
//! the ISO 9797-1 retail MAC) are the RustCrypto crates. The payment schemes
//! on top of them are written here because no well-kept Rust crate covers
//! them: DUKPT, PIN blocks, TR-31 and the MAC framings are specified by ANSI,
//! ISO and the card networks, not by the general cryptography libraries, and
//! the few published crates for them are unmaintained or cover one scheme.
//! Every scheme is checked against published test vectors and against an
//! independent implementation (psec, Adyen's Node library) in the tests.
//!
//! Everything here is sans-IO and deterministic except where a scheme asks
//! for randomness (PIN block fill, TR-31 padding, nexo nonces), which comes
//! from the operating system unless the caller supplies it.

pub mod dukpt;
pub mod keys;
pub mod mac;
pub mod nexo;
pub mod paycode;
pub mod pinblock;
mod primitives;
pub mod totp;
pub mod tr31;

pub use keys::{
    Bdk, DataKey, DerivationKey, InitialKey, Kbpk, KeyAlgorithm, KeyError, MacKey, PinKey,
    key_check_value,
};

/// Fills `buf` with random bytes from the operating system.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    // The OS random source failing is not recoverable for a cryptographic
    // library (no safe fallback exists), so it aborts the operation loudly.
    getrandom::fill(buf).expect("operating system random source failed");
}
