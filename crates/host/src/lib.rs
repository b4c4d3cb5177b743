//! The posnet payment host: acquirer and closed-loop issuer for its
//! terminals.
//!
//! Terminals connect over mutual TLS ([`server`]) and speak the `cup` ISO
//! 8583 dialect. Each request is checked without storage first — identity,
//! MAC under the request's AES DUKPT key, PIN block ([`processor`]) — then
//! decided inside one ledger transaction ([`flows`]): the journal row that
//! makes it exactly-once, the double-entry transfer, the merchant's outbox
//! event and the exact response bytes commit together, in a group commit
//! shared with every other connection, and only then is the response sent.
//!
//! Merchants hear of every transaction through signed webhooks delivered
//! from the outbox ([`outbox`]), and pull transactions, settlements and
//! events from a REST API next to `/healthz` and `/metrics` ([`api`],
//! [`metrics`]).

pub mod admin;
pub mod api;
pub mod config;
pub mod expiry;
pub mod flows;
pub mod issuer;
pub mod metrics;
pub mod outbox;
pub mod processor;
pub mod routing;
pub mod runtime;
pub mod schema;
pub mod server;
pub mod time;

pub use processor::{Processor, Reply};
