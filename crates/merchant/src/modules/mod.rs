//! The back office's selling scenarios, as modules ([`Module`]): a shared
//! catalog and orders with split parts and payments taken on a paired
//! terminal ([`orders`], [`catalog`], [`payments`]), and the scenarios
//! built on them: a shop ([`retail`]), a restaurant ([`restaurant`]), a
//! clinic ([`clinic`]) and event tickets or hotel nights ([`tickets`]).
//!
//! Every change is made in one SQLite transaction together with its audit
//! row. Money is an integer count of the currency's minor units
//! everywhere; an order's total is computed by [`orders::total`] only.
//!
//! Roles: every role may look ([`Need::View`]); owners and cashiers sell,
//! register patients and take payments ([`Need::Sell`]); owners manage the
//! catalog, stock, tables and fees ([`Need::Manage`]). Auditors change
//! nothing.

pub mod api;
pub mod catalog;
pub mod clinic;
pub mod devices;
pub mod orders;
mod pages;
pub mod payments;
pub mod refunds;
pub mod restaurant;
pub mod retail;
pub mod seed;
pub mod tickets;

use crate::server::Module;
use crate::store::StoreError;
use crate::users::Role;
use crate::web::{Authed, WebError};
use ledger::Migrations;

/// Every scenario module, in the order their schema steps must run
/// (orders first: the others refer to its tables).
pub fn all() -> Vec<Module> {
    vec![
        Module {
            migrations: orders::MIGRATIONS,
            routes: pages::routes,
        },
        Module {
            migrations: retail::MIGRATIONS,
            routes: retail::routes,
        },
        Module {
            migrations: restaurant::MIGRATIONS,
            routes: restaurant::routes,
        },
        Module {
            migrations: clinic::MIGRATIONS,
            routes: clinic::routes,
        },
        Module {
            migrations: tickets::MIGRATIONS,
            routes: tickets::routes,
        },
    ]
}

/// The schema steps of [`all`], for opening the store without serving.
pub fn migrations() -> Vec<Migrations> {
    all().iter().map(|m| m.migrations).collect()
}

/// Links the page header shows for each module: component, path, label.
pub const NAV: &[(&str, &str, &str)] = &[
    ("orders", "/orders", "Orders"),
    ("orders", "/catalog", "Catalog"),
    ("retail", "/retail", "Shop"),
    ("restaurant", "/tables", "Tables"),
    ("clinic", "/patients", "Patients"),
    ("tickets", "/tickets", "Tickets"),
    ("orders", "/terminals", "Terminals"),
];

/// What a page or form needs of the user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reading: every role.
    View,
    /// Selling, registering patients, taking payments: owners and cashiers.
    Sell,
    /// The catalog, stock, tables and fees: owners.
    Manage,
}

/// Whether `role` may do what `need` names.
pub fn may(role: Role, need: Need) -> bool {
    match need {
        Need::View => true,
        Need::Sell => matches!(role, Role::Owner | Role::Cashier),
        Need::Manage => role == Role::Owner,
    }
}

/// Refuses (403) unless the session's role may do what `need` names.
pub fn need(authed: &Authed, need: Need) -> Result<(), WebError> {
    if may(authed.session.user.role, need) {
        Ok(())
    } else {
        tracing::warn!(
            user = authed.session.user.name,
            ?need,
            "sales page or form refused to role"
        );
        Err(WebError::Forbidden)
    }
}

/// A sale, order or catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SalesError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing with that id or code.
    #[error("{0} not found")]
    NotFound(String),
    /// The operation is not allowed as things stand (an expired ticket, a
    /// paid order, a malformed value); the message says why.
    #[error("{0}")]
    Refused(String),
}

impl From<rusqlite::Error> for SalesError {
    fn from(e: rusqlite::Error) -> Self {
        SalesError::Store(e.into())
    }
}

impl From<SalesError> for WebError {
    fn from(e: SalesError) -> Self {
        match e {
            SalesError::Store(e) => WebError::Store(e),
            SalesError::NotFound(_) => WebError::NotFound,
            SalesError::Refused(why) => WebError::BadRequest(why),
        }
    }
}

/// A refusal with `why`.
fn refused<T>(why: impl Into<String>) -> Result<T, SalesError> {
    Err(SalesError::Refused(why.into()))
}

/// Longest name, code or barcode accepted from a form.
pub const MAX_TEXT: usize = 80;

/// `text` trimmed, refused when empty (unless `optional`), too long, or
/// holding control characters.
fn clean(field: &str, text: &str, optional: bool) -> Result<Option<String>, SalesError> {
    let text = text.trim();
    if text.is_empty() {
        return if optional {
            Ok(None)
        } else {
            refused(format!("{field}: required"))
        };
    }
    if text.chars().count() > MAX_TEXT {
        return refused(format!("{field}: at most {MAX_TEXT} characters"));
    }
    if text.chars().any(char::is_control) {
        return refused(format!("{field}: no control characters"));
    }
    Ok(Some(text.to_string()))
}

/// `YYYY-MM-DD`, checked as a real date.
fn date(field: &str, text: &str) -> Result<String, SalesError> {
    let text = text.trim();
    match host::api::parse_date(text) {
        Some(_) => Ok(text.to_string()),
        None => refused(format!("{field}: a date such as 2026-05-01")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        for need in [Need::View, Need::Sell, Need::Manage] {
            assert!(may(Role::Owner, need));
        }
        assert!(may(Role::Cashier, Need::Sell));
        assert!(!may(Role::Cashier, Need::Manage));
        assert!(may(Role::Auditor, Need::View));
        assert!(!may(Role::Auditor, Need::Sell));
        assert!(!may(Role::Auditor, Need::Manage));
    }

    #[test]
    fn text_and_dates_are_checked() {
        assert_eq!(
            clean("name", "  Tea ", false).unwrap().as_deref(),
            Some("Tea")
        );
        assert!(clean("name", " ", false).is_err());
        assert_eq!(clean("barcode", "", true).unwrap(), None);
        assert!(clean("name", "a\u{7}b", false).is_err());
        assert!(clean("name", &"x".repeat(MAX_TEXT + 1), false).is_err());
        assert_eq!(date("night", "2026-02-28").unwrap(), "2026-02-28");
        assert!(date("night", "2026-02-30").is_err());
        assert!(date("night", "tomorrow").is_err());
    }
}
