//! Tags of the terminal parameters the host sends in field 62 of the
//! sign-on response (BER-TLV, private class, values as ASCII text).

/// Merchant name shown on receipts.
pub const MERCHANT_NAME: u32 = 0xDF01;
/// Currency, ISO 4217 numeric.
pub const CURRENCY: u32 = 0xDF02;
/// Largest amount per transaction, minor units.
pub const MAX_AMOUNT: u32 = 0xDF03;
/// Floor limit for offline approvals, minor units (0: never offline).
pub const OFFLINE_FLOOR: u32 = 0xDF04;
/// Parameter version: the terminal downloads again when it changes.
pub const VERSION: u32 = 0xDF05;
/// Seconds between echo messages when idle.
pub const ECHO_INTERVAL: u32 = 0xDF06;
/// Enabled payment methods, comma-separated (`card`, `qr`).
pub const METHODS: u32 = 0xDF07;
