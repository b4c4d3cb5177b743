//! The supervisor's second factor for refunds and reversals: a one-time
//! code (TOTP, RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps, one step of
//! clock drift allowed either way) from an authenticator app, carried in
//! `SaleData.SaleToAcquirerData` as `supervisorCode=NNNNNN`. A code is
//! accepted once: a step at or before the last accepted one is refused
//! (RFC 6238 section 5.2), so a code seen over a shoulder cannot be
//! replayed.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Bytes of a fresh secret (160 bits, RFC 4226's recommendation).
pub const SECRET_LEN: usize = 20;

/// Why a supervisor code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// No secret is configured on this terminal.
    #[error(
        "refunds and reversals need a supervisor code and none is configured on this terminal (posnet terminal supervisor set)"
    )]
    NotConfigured,
    /// The request carries no code.
    #[error("a supervisor code is required (SaleToAcquirerData supervisorCode=NNNNNN)")]
    Missing,
    /// The code is not the current one (or was already used).
    #[error("the supervisor code is wrong or already used")]
    Wrong,
}

/// A TOTP secret; zeroized on drop, never shown.
#[derive(Clone)]
pub struct Totp {
    secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Totp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Totp(redacted)")
    }
}

impl Totp {
    /// A secret from its bytes.
    pub fn new(secret: Vec<u8>) -> Self {
        Self {
            secret: Zeroizing::new(secret),
        }
    }

    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut secret = vec![0u8; SECRET_LEN];
        getrandom::fill(&mut secret).expect("operating system random source");
        Self::new(secret)
    }

    /// The secret's bytes, to seal them.
    pub fn expose(&self) -> &[u8] {
        &self.secret
    }

    /// The code of `step` with `digits` digits (RFC 4226 dynamic truncation).
    pub fn code(&self, step: u64, digits: u32) -> u32 {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes any key length");
        mac.update(&step.to_be_bytes());
        let hash = mac.finalize().into_bytes();
        let offset = usize::from(hash[hash.len() - 1] & 0x0f);
        let binary = u32::from_be_bytes([
            hash[offset] & 0x7f,
            hash[offset + 1],
            hash[offset + 2],
            hash[offset + 3],
        ]);
        binary % 10u32.pow(digits)
    }

    /// The 6-digit code at Unix time `unix`, as typed.
    pub fn code_at(&self, unix: u64) -> String {
        format!("{:06}", self.code(unix / STEP_SECS, DIGITS))
    }

    /// Checks `code` at Unix time `unix`: it must be the code of the
    /// current step or of one step before or after, and of a step later
    /// than `last_used`. Returns the step it matched, to record as used.
    pub fn verify(
        &self,
        code: &str,
        unix: u64,
        last_used: Option<u64>,
    ) -> Result<u64, SupervisorError> {
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SupervisorError::Wrong);
        }
        let now = unix / STEP_SECS;
        let mut matched = None;
        // Every candidate is computed and compared, so the time taken does
        // not tell which step matched.
        for step in [now.saturating_sub(1), now, now + 1] {
            let expected = format!("{:06}", self.code(step, DIGITS));
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
                && last_used.is_none_or(|l| step > l)
            {
                matched = Some(step);
            }
        }
        matched.ok_or(SupervisorError::Wrong)
    }

    /// The `otpauth://` URI an authenticator app scans (Google
    /// Authenticator's key URI format): the secret in base32.
    pub fn otpauth_uri(&self, account: &str) -> String {
        let label: String =
            form_urlencoded::byte_serialize(format!("posnet:{account}").as_bytes()).collect();
        let secret = data_encoding::BASE32_NOPAD.encode(&self.secret);
        format!(
            "otpauth://totp/{label}?secret={secret}&issuer=posnet&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows: the secret is the ASCII string
    /// "12345678901234567890", codes have 8 digits.
    const RFC6238_SHA1: &[(u64, u32)] = &[
        (59, 94_287_082),
        (1_111_111_109, 7_081_804),
        (1_111_111_111, 14_050_471),
        (1_234_567_890, 89_005_924),
        (2_000_000_000, 69_279_037),
        (20_000_000_000, 65_353_130),
    ];

    fn rfc() -> Totp {
        Totp::new(b"12345678901234567890".to_vec())
    }

    #[test]
    fn rfc_6238_test_vectors() {
        for &(time, code) in RFC6238_SHA1 {
            assert_eq!(rfc().code(time / STEP_SECS, 8), code, "T = {time}");
            // Six digits are the last six of the eight.
            assert_eq!(rfc().code_at(time), format!("{:06}", code % 1_000_000));
        }
    }

    #[test]
    fn one_step_of_drift_either_way_and_no_replay() {
        let t = 1_111_111_111;
        let totp = rfc();
        let step = t / STEP_SECS;
        assert_eq!(totp.verify(&totp.code_at(t), t, None), Ok(step));
        assert_eq!(totp.verify(&totp.code_at(t - 30), t, None), Ok(step - 1));
        assert_eq!(totp.verify(&totp.code_at(t + 30), t, None), Ok(step + 1));
        assert_eq!(
            totp.verify(&totp.code_at(t - 60), t, None),
            Err(SupervisorError::Wrong)
        );
        assert_eq!(
            totp.verify(&totp.code_at(t + 60), t, None),
            Err(SupervisorError::Wrong)
        );
        assert_eq!(
            totp.verify(&totp.code_at(t), t, Some(step)),
            Err(SupervisorError::Wrong),
            "a code is used once"
        );
        assert_eq!(
            totp.verify(&totp.code_at(t + 30), t, Some(step)),
            Ok(step + 1)
        );
        for bad in ["", "12345", "1234567", "12345a", " 23456"] {
            assert_eq!(
                totp.verify(bad, t, None),
                Err(SupervisorError::Wrong),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn otpauth_uri_carries_the_secret_in_base32() {
        let uri = rfc().otpauth_uri("T0000001");
        assert_eq!(
            uri,
            "otpauth://totp/posnet%3AT0000001?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=posnet&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(format!("{:?}", rfc()), "Totp(redacted)");
    }
}
