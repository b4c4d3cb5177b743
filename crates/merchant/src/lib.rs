//! The posnet merchant back office.
//!
//! The payment host tells the merchant about every transaction through
//! signed webhooks ([`webhook`]) and serves the same facts from its REST
//! API ([`host_api`]). This crate records them once each in the merchant's
//! own SQLite file ([`store`], [`events`]), catches up after downtime
//! ([`backfill`]), checks a day against the host ([`reconcile`]), and keeps
//! an audit trail of every change ([`audit`]). Its selling scenarios
//! (shop, restaurant, clinic, tickets) and payments taken on a paired
//! terminal are [`modules`].

pub mod audit;
pub mod backfill;
pub mod events;
pub mod host_api;
pub mod modules;
pub mod reconcile;
pub mod reports;
pub mod server;
pub mod session;
pub mod store;
pub mod users;
pub mod web;
pub mod webhook;
