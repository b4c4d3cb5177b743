//! Wallet payment codes: what a posnet wallet app shows as a QR code or
//! barcode and the terminal scans, in the manner of the UnionPay, Alipay
//! and WeChat Pay "payment codes". The app makes them offline from the
//! wallet's secret; the host checks them and accepts each one once.
//!
//! A code is 19 digits:
//!
//! ```text
//! 69 123456789 12345678
//! |  |         one-time code: TOTP (RFC 6238, HMAC-SHA-1, 30-s steps) of
//! |  |         the wallet's secret, 8 digits
//! |  wallet number, 9 digits
//! prefix: posnet's payment-code range (no posnet card starts with 69)
//! ```
//!
//! There is no check digit: the one-time code authenticates the whole
//! code, so a misread digit anywhere fails the host's check (and one in
//! the wallet number names a wallet whose secret gives another code).

use crate::totp::{STEP_SECS, Totp, TotpError};
use std::fmt;
use subtle::ConstantTimeEq;

/// First two digits of every payment code.
pub const PREFIX: &str = "69";
/// Digits of a wallet number.
pub const WALLET_DIGITS: usize = 9;
/// Digits of the one-time code.
pub const OTP_DIGITS: usize = 8;
/// Digits of a payment code.
pub const LEN: usize = PREFIX.len() + WALLET_DIGITS + OTP_DIGITS;
/// Issuer name of the wallet's TOTP generator.
pub const ISSUER: &str = "posnet wallet";
/// How far back (in steps) a code is told apart as expired rather than
/// wrong: 10 steps, five minutes.
pub const EXPIRED_WINDOW: u64 = 10;

/// A string is not a payment code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentCodeError {
    /// Not 19 characters (or, for a wallet number, not 9).
    #[error("a payment code has {expected} digits, this has {got} characters")]
    Length {
        /// Digits expected.
        expected: usize,
        /// Characters found.
        got: usize,
    },
    /// A character is not an ASCII digit.
    #[error("a payment code has digits only")]
    NotDigits,
    /// The code does not start with [`PREFIX`].
    #[error("a payment code starts with {PREFIX}")]
    Prefix,
}

/// A wallet's number: 9 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalletNumber(u32);

impl WalletNumber {
    /// The wallet number `n`, if below 10^9.
    pub fn new(n: u32) -> Option<Self> {
        (n < 1_000_000_000).then_some(WalletNumber(n))
    }

    /// Parses exactly 9 ASCII digits.
    pub fn parse(text: &str) -> Result<Self, PaymentCodeError> {
        digits(text, WALLET_DIGITS)?;
        // 9 digits always fit a u32 (below 10^9 < 2^32).
        text.parse()
            .map(WalletNumber)
            .map_err(|_| PaymentCodeError::NotDigits)
    }

    /// The wallet's TOTP generator over `secret` (8 digits, 30-s steps).
    pub fn generator(self, secret: &[u8]) -> Result<Totp, TotpError> {
        Totp::with_digits(secret, ISSUER, &self.to_string(), OTP_DIGITS)
    }

    /// The payment code of the wallet with `secret` at Unix time `unix`.
    pub fn code_at(self, secret: &[u8], unix: u64) -> Result<PaymentCode, TotpError> {
        let otp = self.generator(secret)?.code_at(unix);
        Ok(PaymentCode { wallet: self, otp })
    }
}

impl fmt::Display for WalletNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:09}", self.0)
    }
}

/// Checks that `text` is `len` ASCII digits (length first: nothing is
/// scanned past a wrong length).
fn digits(text: &str, len: usize) -> Result<(), PaymentCodeError> {
    if text.len() != len {
        return Err(PaymentCodeError::Length {
            expected: len,
            got: text.chars().count(),
        });
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PaymentCodeError::NotDigits);
    }
    Ok(())
}

/// Whether `text` (a code, masked or not) has a payment code's length and
/// prefix: how a receipt tells a wallet payment from a card's.
pub fn looks_like_code(text: &str) -> bool {
    text.len() == LEN && text.starts_with(PREFIX)
}

/// A parsed payment code; `Debug` hides the one-time code.
#[derive(Clone, PartialEq, Eq)]
pub struct PaymentCode {
    wallet: WalletNumber,
    otp: String,
}

impl fmt::Debug for PaymentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentCode")
            .field("wallet", &self.wallet)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for PaymentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}{}", self.wallet, self.otp)
    }
}

/// What checking a payment code found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The code of the current step or a neighbour, not used before: pays;
    /// record the step as the wallet's last used.
    Valid {
        /// The step the code belongs to.
        step: u64,
    },
    /// A good code whose step is at or before the last one used.
    Used,
    /// The code of a step up to [`EXPIRED_WINDOW`] steps old.
    Expired,
    /// Not a code of this wallet near now.
    Wrong,
}

impl PaymentCode {
    /// Parses a scanned code; never panics, reads at most 19 characters.
    pub fn parse(text: &str) -> Result<Self, PaymentCodeError> {
        digits(text, LEN)?;
        if !text.starts_with(PREFIX) {
            return Err(PaymentCodeError::Prefix);
        }
        let (wallet, otp) = text[PREFIX.len()..].split_at(WALLET_DIGITS);
        Ok(PaymentCode {
            wallet: WalletNumber::parse(wallet)?,
            otp: otp.to_string(),
        })
    }

    /// The wallet it pays from.
    pub fn wallet(&self) -> WalletNumber {
        self.wallet
    }

    /// Checks the code against the wallet's generator at Unix time `unix`,
    /// `last_used` being the step of the wallet's last accepted code.
    pub fn check(&self, totp: &Totp, unix: u64, last_used: Option<u64>) -> Verdict {
        match totp.verify(&self.otp, unix, None) {
            Ok(step) if last_used.is_some_and(|last| step <= last) => Verdict::Used,
            Ok(step) => Verdict::Valid { step },
            Err(_) => {
                // Bounded: EXPIRED_WINDOW codes at most.
                let expired = (2..=EXPIRED_WINDOW).any(|back| {
                    let past = unix.saturating_sub(back * STEP_SECS);
                    bool::from(totp.code_at(past).as_bytes().ct_eq(self.otp.as_bytes()))
                });
                if expired {
                    Verdict::Expired
                } else {
                    Verdict::Wrong
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_eight_digit_vectors_make_the_code() {
        // RFC 6238 Appendix B, SHA-1: the 8-digit codes are the code's tail.
        let wallet = WalletNumber::new(123_456_789).unwrap();
        for (time, otp) in [(59, "94287082"), (1_111_111_109, "07081804")] {
            let code = wallet.code_at(SECRET, time).unwrap();
            assert_eq!(code.to_string(), format!("69123456789{otp}"));
            assert_eq!(PaymentCode::parse(&code.to_string()), Ok(code));
        }
    }

    #[test]
    fn verdicts_valid_used_expired_wrong() {
        let wallet = WalletNumber::new(42).unwrap();
        let totp = wallet.generator(SECRET).unwrap();
        let t = 1_700_000_000;
        let step = t / STEP_SECS;
        let code = wallet.code_at(SECRET, t).unwrap();
        assert_eq!(code.check(&totp, t, None), Verdict::Valid { step });
        assert_eq!(
            code.check(&totp, t + 30, Some(step - 1)),
            Verdict::Valid { step }
        );
        assert_eq!(code.check(&totp, t, Some(step)), Verdict::Used);
        assert_eq!(code.check(&totp, t + 30, Some(step + 1)), Verdict::Used);
        assert_eq!(code.check(&totp, t + 90, None), Verdict::Expired);
        assert_eq!(code.check(&totp, t + 300, None), Verdict::Expired);
        assert_eq!(code.check(&totp, t + 330, None), Verdict::Wrong);
        let other = WalletNumber::new(43).unwrap();
        let forged = PaymentCode::parse(&format!("69{other}{}", &code.to_string()[11..])).unwrap();
        let other_totp = other.generator(b"another secret of 20b").unwrap();
        assert_eq!(forged.check(&other_totp, t, None), Verdict::Wrong);
        assert_eq!(
            format!("{code:?}"),
            "PaymentCode { wallet: WalletNumber(42), .. }"
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        let length = |got| PaymentCodeError::Length { expected: 19, got };
        for (text, err) in [
            ("", length(0)),
            ("691234567891234567", length(18)),
            ("69123456789123456789", length(20)),
            ("6212345678912345678", PaymentCodeError::Prefix),
            ("69123456789123456a7", PaymentCodeError::NotDigits),
            ("6912345678912345\u{e9}7", PaymentCodeError::NotDigits),
            ("691234567891234567\u{e9}", length(19)),
        ] {
            assert_eq!(PaymentCode::parse(text), Err(err), "{text:?}");
        }
        assert!(PaymentCode::parse("6912345678912345678").is_ok());
        assert!(WalletNumber::parse("12345678").is_err());
        assert!(WalletNumber::parse("+12345678").is_err());
        assert!(WalletNumber::new(1_000_000_000).is_none());
        assert!(looks_like_code("691000*********5678"));
        assert!(!looks_like_code("620000*********5678"));
        assert!(!looks_like_code("691000******5678"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,40}") {
            let _ = PaymentCode::parse(&text);
            let _ = WalletNumber::parse(&text);
        }

        #[test]
        fn any_prefixed_19_digits_round_trip(wallet in 0u32..1_000_000_000, otp in 0u32..100_000_000) {
            let text = format!("69{wallet:09}{otp:08}");
            let code = PaymentCode::parse(&text).unwrap();
            prop_assert_eq!(code.wallet(), WalletNumber::new(wallet).unwrap());
            prop_assert_eq!(code.to_string(), text);
        }

        #[test]
        fn other_prefixes_are_refused(prefix in 0u8..100, rest in "[0-9]{17}") {
            prop_assume!(prefix != 69);
            let text = format!("{prefix:02}{rest}");
            prop_assert_eq!(PaymentCode::parse(&text), Err(PaymentCodeError::Prefix));
        }

        #[test]
        fn a_fresh_code_checks_once(wallet in 0u32..1_000_000_000, t in 100u64..4_000_000_000) {
            let wallet = WalletNumber::new(wallet).unwrap();
            let totp = wallet.generator(SECRET).unwrap();
            let code = wallet.code_at(SECRET, t).unwrap();
            prop_assert_eq!(code.check(&totp, t, None), Verdict::Valid { step: t / STEP_SECS });
            prop_assert_eq!(code.check(&totp, t, Some(t / STEP_SECS)), Verdict::Used);
        }
    }
}
