//! The supervisor's second factor for refunds and reversals: a one-time
//! code from an authenticator app ([`paycrypto::totp`], accepted once),
//! carried in `SaleData.SaleToAcquirerData` as `supervisorCode=NNNNNN`.

use paycrypto::totp::{Totp, TotpError};

/// The issuer name authenticator apps show for the terminal's secret.
pub const ISSUER: &str = "posnet";

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

/// The terminal's TOTP generator of `secret`, named after its `POIID`.
pub fn totp(secret: &[u8], poi_id: &str) -> Result<Totp, TotpError> {
    Totp::new(secret, ISSUER, poi_id)
}

/// Checks `code` at Unix time `unix` against `secret`, refusing steps at
/// or before `last_used`; the step matched, to record as used.
pub fn verify(
    secret: &[u8],
    poi_id: &str,
    code: &str,
    unix: u64,
    last_used: Option<u64>,
) -> Result<u64, SupervisorError> {
    let totp = totp(secret, poi_id).map_err(|e| {
        tracing::error!("supervisor secret unusable: {e}");
        SupervisorError::NotConfigured
    })?;
    totp.verify(code, unix, last_used)
        .map_err(|_| SupervisorError::Wrong)
}
