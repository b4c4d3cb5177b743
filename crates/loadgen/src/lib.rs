//! Load generation for the posnet payment host: simulated terminals over
//! mutual TLS, as many as wanted, each with its own certificate and AES
//! DUKPT initial key.
//!
//! - [`message`]: a simulated terminal's requests in the `cup` dialect —
//!   sign-on, sale, refund, reversal, balance inquiry — sealed with the
//!   KSN (field 62), a format 4 PIN block (52) and an AES-CMAC (64), and
//!   the check of a response's MAC. The host's own tests build their
//!   requests with it.
//! - [`driver`]: a load run — several requests in flight per connection,
//!   reconnection and sign-on after a lost connection, reversal of every
//!   sale whose answer was lost — recording what each terminal saw.
//! - [`stats`]: latency histograms (p50, p99, p99.9, max) and response
//!   codes per kind of request.
//! - [`audit`]: what the terminals saw against the host's journal, ledger
//!   and outbox, read-only.
//! - [`setup`]: a merchant, funded cards and enrolled terminals added to a
//!   host's database in one commit.
//!
//! Runs only target loopback addresses, and every loop is bounded in count
//! and time (see [`driver`]).

pub mod audit;
pub mod driver;
pub mod message;
pub mod setup;
pub mod stats;

pub use audit::{AuditReport, audit};
pub use driver::{
    LoadConfig, LoadError, Mix, Op, Outcome, Progress, Record, Report, TerminalLoad, run,
};
pub use message::{Card, Sealed, SimTerminal, open_response, tls_config};
pub use setup::{Fleet, FleetSpec, enroll_fleet};
pub use stats::{KindStats, Stats, Summary};
