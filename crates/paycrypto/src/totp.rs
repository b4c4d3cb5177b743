//! One-time codes from an authenticator app (TOTP, RFC 6238): HMAC-SHA-1,
//! 6 digits, 30-second steps, one step of clock drift allowed either way.
//! The terminal asks a supervisor for one before a refund or a reversal;
//! the back office asks owners and auditors for one at login.
//!
//! The codes are computed by the `totp-rs` crate; this module adds what it
//! leaves to the caller: a code is accepted once (RFC 6238 section 5.2), so
//! a step at or before the last accepted one is refused and a code seen
//! over a shoulder cannot be replayed.

use std::fmt;
use zeroize::Zeroizing;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Digits of a code.
pub const DIGITS: usize = 6;
/// Bytes of a fresh secret (160 bits, RFC 4226's recommendation).
pub const SECRET_LEN: usize = 20;

/// What went wrong with a TOTP secret or code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// The secret, issuer or account cannot make a generator (a secret
    /// under 128 bits, a `:` in a name).
    #[error("unusable TOTP parameters: {0}")]
    Parameters(String),
    /// The code is not that of the current step or a neighbour, or its
    /// step was already used.
    #[error("the code is wrong or already used")]
    Wrong,
}

/// A TOTP secret with the names an authenticator app shows for it; the
/// secret is zeroized on drop and never shown by `Debug`.
#[derive(Clone)]
pub struct Totp {
    secret: Zeroizing<Vec<u8>>,
    generator: totp_rs::Totp,
    digits: usize,
}

impl fmt::Debug for Totp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Totp(redacted)")
    }
}

impl Totp {
    /// The generator of `secret`, shown in apps as `issuer:account`.
    pub fn new(secret: &[u8], issuer: &str, account: &str) -> Result<Self, TotpError> {
        Self::with_digits(secret, issuer, account, DIGITS)
    }

    /// [`Totp::new`] with codes of `digits` digits (6 to 8, RFC 4226
    /// section 5.3): wallet payment codes carry 8.
    pub fn with_digits(
        secret: &[u8],
        issuer: &str,
        account: &str,
        digits: usize,
    ) -> Result<Self, TotpError> {
        if !(6..=8).contains(&digits) {
            return Err(TotpError::Parameters(format!(
                "{digits} digits: use 6 to 8"
            )));
        }
        let generator = totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(digits as u8)
            .with_step_duration(STEP_SECS)
            .with_skew(1)
            .with_secret(secret.to_vec())
            .with_issuer(Some(issuer))
            .with_account_name(account)
            .build()
            .map_err(|e| TotpError::Parameters(e.to_string()))?;
        Ok(Self {
            secret: Zeroizing::new(secret.to_vec()),
            generator,
            digits,
        })
    }

    /// A fresh random secret.
    pub fn generate(issuer: &str, account: &str) -> Result<Self, TotpError> {
        let mut secret = Zeroizing::new(vec![0u8; SECRET_LEN]);
        crate::random_bytes(&mut secret);
        Self::new(&secret, issuer, account)
    }

    /// The secret's bytes, to seal them.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The code at Unix time `unix`, as an app shows it.
    pub fn code_at(&self, unix: u64) -> String {
        self.generator.generate(unix).to_string()
    }

    /// Checks `code` at Unix time `unix`: it must be the code of the
    /// current step or of one step before or after, and of a step later
    /// than `last_used`. Returns the step it matched, to record as used.
    pub fn verify(&self, code: &str, unix: u64, last_used: Option<u64>) -> Result<u64, TotpError> {
        let code = code.trim();
        if code.len() != self.digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TotpError::Wrong);
        }
        match self.generator.check(code, unix) {
            Some(step) if last_used.is_none_or(|last| step > last) => Ok(step),
            _ => Err(TotpError::Wrong),
        }
    }

    /// The `otpauth://` URI an authenticator app scans (the secret in
    /// base32): it is the secret, to show once.
    pub fn otpauth_uri(&self) -> Zeroizing<String> {
        Zeroizing::new(
            self.generator
                .to_url()
                .expect("the account name was checked when the generator was built"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows: the secret is the ASCII string
    /// "12345678901234567890"; codes are the last six of the eight digits.
    const RFC6238_SHA1: &[(u64, u32)] = &[
        (59, 94_287_082),
        (1_111_111_109, 7_081_804),
        (1_111_111_111, 14_050_471),
        (1_234_567_890, 89_005_924),
        (2_000_000_000, 69_279_037),
        (20_000_000_000, 65_353_130),
    ];

    fn rfc() -> Totp {
        Totp::new(b"12345678901234567890", "posnet", "T0000001").unwrap()
    }

    #[test]
    fn rfc_6238_test_vectors() {
        for &(time, code) in RFC6238_SHA1 {
            assert_eq!(
                rfc().code_at(time),
                format!("{:06}", code % 1_000_000),
                "T = {time}"
            );
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
        for far in [t - 60, t + 60] {
            assert_eq!(
                totp.verify(&totp.code_at(far), t, None),
                Err(TotpError::Wrong)
            );
        }
        assert_eq!(
            totp.verify(&totp.code_at(t), t, Some(step)),
            Err(TotpError::Wrong),
            "a code is used once"
        );
        assert_eq!(
            totp.verify(&totp.code_at(t + 30), t, Some(step)),
            Ok(step + 1)
        );
        for bad in ["", "12345", "1234567", "12345a", "+23456"] {
            assert_eq!(totp.verify(bad, t, None), Err(TotpError::Wrong), "{bad:?}");
        }
    }

    #[test]
    fn otpauth_uri_carries_the_secret_in_base32_and_debug_hides_it() {
        let uri = rfc().otpauth_uri();
        assert!(
            uri.starts_with("otpauth://totp/posnet:T0000001?"),
            "{}",
            *uri
        );
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{}",
            *uri
        );
        assert!(uri.contains("issuer=posnet"), "{}", *uri);
        assert_eq!(format!("{:?}", rfc()), "Totp(redacted)");
        assert!(matches!(
            Totp::new(b"short", "posnet", "x"),
            Err(TotpError::Parameters(_))
        ));
        assert!(matches!(
            Totp::new(b"12345678901234567890", "posnet", "a:b"),
            Err(TotpError::Parameters(_))
        ));
    }
}
