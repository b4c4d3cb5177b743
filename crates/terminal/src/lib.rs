//! The posnet POS terminal.
//!
//! [`engine`] makes every decision with no I/O (routing, local refusals,
//! what an answer or a timeout means, store-and-forward order), so each
//! path is tested deterministically. [`runtime`] performs them: the host
//! link ([`link`]), DUKPT keys and MACs, the journal ([`journal`]) in which
//! every reversal is stored before the request it protects leaves.
//! [`card`] holds the reader trait, the simulated reader's test-card
//! catalog and the PIN pad. [`receipt`] prints merchant and customer
//! receipts as text, ESC/POS and e-receipt JSON; [`screen`] serves the
//! terminal's screen as a web page with a small JSON API; [`ecr`] serves
//! cash registers and phones in nexo Sale-to-POI.

pub mod card;
pub mod ecr;
pub mod engine;
pub mod journal;
pub mod link;
pub mod receipt;
pub mod runtime;
pub mod screen;

pub use engine::{Outcome, Params, Refusal, TxnKind, TxnRequest};
pub use runtime::{Status, Terminal, TerminalOptions, TxnResult};
