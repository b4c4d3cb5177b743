//! The posnet merchant back office.
//!
//! The payment host tells the merchant about every transaction through
//! signed webhooks and serves the same facts from its REST API. This crate
//! records them in the merchant's own SQLite file ([`store`]).

pub mod store;
