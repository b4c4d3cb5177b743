//! The cashier's phone: a nexo Sale system (docs/ecr-api.md) that pairs
//! with a posnet terminal and takes payments through it.
//!
//! - [`store`]: the pairings (terminal address, pinned certificate, nexo
//!   key), owner-only on disk;
//! - [`pin`]: TLS that trusts exactly the paired terminal's certificate;
//! - [`transport`]: HTTPS with WebSocket notifications, and the
//!   [`transport::Transport`] every link fits;
//! - [`client`]: [`Phone`]: pay, refund, reverse, status, diagnosis,
//!   login, logout, with retries, answer checks and recovery;
//! - [`check`], [`recovery`], [`retry`]: the pure decisions behind it
//!   (is this answer ours? ask again? how long to wait?);
//! - [`diagnose`]: what is wrong between the phone and its terminal;
//! - [`history`]: the phone's own record of its exchanges;
//! - [`money`], [`explain`]: amounts as typed, reasons and receipts as
//!   shown.

pub mod check;
pub mod client;
pub mod diagnose;
pub mod explain;
pub mod history;
pub mod money;
pub mod pin;
pub mod recovery;
pub mod retry;
pub mod store;
pub mod transport;

pub use client::{
    Event, Options, Outcome, Phone, PhoneError, StatusReport, Summary, SupervisorCode,
    timestamp_now,
};
pub use money::Money;
pub use nexo::pairing::Pairing;
