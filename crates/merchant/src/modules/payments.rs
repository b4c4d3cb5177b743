//! Taking payment from the back office: an order (or one split part) is
//! paid on a paired terminal through the `phone` crate, the cashier's
//! nexo Sale system, used here as a library.
//!
//! The back office's pairings and its Sale system's history live in
//! `terminals/` in its data directory ([`PairingStore`], `phone.db`),
//! owner-only; `posnet merchant terminal pair` stores a pairing there.
//!
//! A payment is first written as `pending` (one short transaction), then
//! asked of the terminal with no database transaction open, then finished
//! with the terminal's outcome (another short transaction,
//! [`orders::record_outcome`]). A lost answer is settled by the phone
//! library with `TransactionStatus`; one it could not settle is `unknown`
//! and blocks the order's other payments until [`Payments::check`] learns
//! its outcome. Payments run in tasks of their own, so a browser that goes
//! away does not cut a payment short; at most one runs per terminal.
//! [`Payments::start`] returns as soon as the payment is written; the
//! terminal's progress (its display and event notifications) is kept
//! while it runs ([`Payments::progress`]) for the payment's status page.

use super::SalesError;
use super::orders::{self, Outcome, Payment, PaymentStatus, Started};
use super::refunds;
use crate::audit::{self, Change};
use crate::host_api::HostApi;
use crate::store::{Store, StoreError, unix_now};
use nexo::message::{ResponseBody, SaleToPoiResponse};
use nexo::pairing::Pairing;
use nexo::wire::ErrorCondition;
use phone::store::{Paired, PairingStore};
use phone::{Event, Money, Phone, PhoneError, SupervisorCode};
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use terminal::ecr::protocol::PoiTransactionId;

/// Directory of the pairings and the Sale system's history, in the back
/// office's data directory.
pub const TERMINALS_DIR: &str = "terminals";

/// Payment history records searched for a payment cut short by a restart.
const HISTORY_SEARCH: u32 = 500;

/// Progress lines kept per running payment (the newest): a terminal's
/// screen shows a few; older ones are of no use to the cashier.
const PROGRESS_LINES: usize = 8;

/// The terminals directory of data directory `data_dir`.
pub fn terminals_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(TERMINALS_DIR)
}

/// Pairing or unpairing a terminal failed.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// The code is not a posnet pairing code.
    #[error("pairing code: {0}")]
    Code(String),
    /// No pairing with that terminal.
    #[error(
        "no terminal {0:?} is paired with the back office (see `posnet merchant terminal list`)"
    )]
    NotPaired(String),
    /// The pairing store failed.
    #[error(transparent)]
    Pairings(phone::store::StoreError),
    /// The database failed (the audit row).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<phone::store::StoreError> for TerminalError {
    fn from(e: phone::store::StoreError) -> Self {
        match e {
            phone::store::StoreError::UnknownTerminal(poi_id) => TerminalError::NotPaired(poi_id),
            other => TerminalError::Pairings(other),
        }
    }
}

/// Stores the terminal pairing of `code` (a `posnet-pair://` URI) in the
/// back office's pairing store, replacing an earlier pairing with the same
/// terminal; audited. The passphrase is never shown again.
pub fn pair(
    store: &Store,
    data_dir: &Path,
    code: &str,
    actor: &str,
) -> Result<Paired, TerminalError> {
    let pairing =
        Pairing::from_code(code.trim()).map_err(|e| TerminalError::Code(e.to_string()))?;
    let pairings = PairingStore::new(&terminals_dir(data_dir));
    pairings.add(&pairing, false, &phone::timestamp_now())?;
    let paired = pairings
        .list()?
        .into_iter()
        .find(|p| p.poi_id == pairing.poi_id)
        .ok_or_else(|| TerminalError::NotPaired(pairing.poi_id.clone()))?;
    store.write(|tx| {
        audit::append(
            tx,
            &Change {
                actor,
                action: "terminal.pair",
                subject: &format!("terminal:{}", paired.poi_id),
                before: None,
                after: Some(json!({
                    "address": paired.address, "fingerprint": paired.fingerprint,
                    "key_identifier": paired.key_identifier, "key_version": paired.key_version,
                })),
            },
            unix_now(),
        )
    })?;
    Ok(paired)
}

/// The paired terminals (no secrets).
pub fn terminals(data_dir: &Path) -> Result<Vec<Paired>, TerminalError> {
    Ok(PairingStore::new(&terminals_dir(data_dir)).list()?)
}

/// Forgets the pairing with terminal `poi_id`; audited.
pub fn unpair(
    store: &Store,
    data_dir: &Path,
    poi_id: &str,
    actor: &str,
) -> Result<(), TerminalError> {
    PairingStore::new(&terminals_dir(data_dir)).remove(poi_id)?;
    store.write(|tx| {
        audit::append(
            tx,
            &Change {
                actor,
                action: "terminal.unpair",
                subject: &format!("terminal:{poi_id}"),
                before: None,
                after: None,
            },
            unix_now(),
        )
    })?;
    Ok(())
}

/// The outcome to record for a terminal's answer to a payment.
pub fn outcome_of(answer: &phone::Outcome) -> Outcome {
    let summary = answer.summary();
    let mut outcome = Outcome {
        service_id: Some(answer.service_id.clone()),
        poi_transaction_id: summary.poi_transaction_id.clone(),
        masked_pan: summary.masked_pan.clone(),
        approval_code: summary.approval_code.clone(),
        ..Outcome::default()
    };
    if let Some(id) = summary
        .poi_transaction_id
        .as_deref()
        .and_then(PoiTransactionId::parse)
    {
        outcome.batch = Some(id.batch);
        outcome.stan = Some(id.stan);
    }
    if let ResponseBody::Payment(p) = &answer.response.body
        && let Some(acquirer) = p
            .payment_result
            .as_ref()
            .and_then(|r| r.payment_acquirer_data.as_ref())
    {
        outcome.acquirer_terminal_id = Some(acquirer.acquirer_poi_id.clone());
        outcome.rrn = acquirer
            .acquirer_transaction_id
            .as_ref()
            .map(|t| t.transaction_id.clone());
    }
    if answer.succeeded() {
        outcome.status = Some(PaymentStatus::Approved);
        outcome.reason = answer
            .recovered
            .as_ref()
            .map(|lost| format!("the answer was lost ({lost}) and was learnt from the terminal"));
    } else {
        outcome.status = Some(PaymentStatus::Declined);
        outcome.reason = Some(match summary.advice {
            Some(advice) => format!("{} — {advice}", summary.reason),
            None => summary.reason,
        });
    }
    outcome
}

/// The outcome to record when the phone library could not carry a
/// payment out.
fn outcome_of_error(error: &PhoneError) -> Outcome {
    let (status, service_id) = match error {
        // The answer was lost and the terminal could not be asked: money
        // may have moved.
        PhoneError::Unknown { service_id, .. } => {
            (PaymentStatus::Unknown, Some(service_id.clone()))
        }
        // The phone's own record failed, maybe after the terminal acted.
        PhoneError::History(_) | PhoneError::BadAnswer(_) => (PaymentStatus::Unknown, None),
        PhoneError::NotReceived { service_id, .. } => {
            (PaymentStatus::Failed, Some(service_id.clone()))
        }
        // Nothing was sent, or the terminal did not act on it.
        _ => (PaymentStatus::Failed, None),
    };
    Outcome {
        status: Some(status),
        reason: Some(error.to_string()),
        service_id,
        ..Outcome::default()
    }
}

/// Payments under way, and one lock per terminal.
#[derive(Debug)]
pub struct Payments {
    dir: PathBuf,
    /// One payment at a time per terminal (the terminal would answer Busy).
    /// Keys are POIIDs of stored pairings, so the map stays as small as
    /// the pairing store.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Ids of the payments running in this process.
    running: Mutex<HashSet<i64>>,
    /// The terminal's latest progress lines of each running payment; an
    /// entry goes when its payment ends, so the map stays as small as
    /// the set of running payments.
    progress: Mutex<HashMap<i64, VecDeque<String>>>,
}

/// Removes a payment from the running set when its task ends, however it
/// ends.
struct Running<'a> {
    payments: &'a Payments,
    id: i64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.payments
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.payments
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// What the cashier is shown of a phone library event.
fn progress_line(event: &Event) -> String {
    match event {
        Event::Progress(text) => text.clone(),
        Event::Retry {
            attempt, reason, ..
        } => format!("the terminal was not reached ({reason}); trying again (attempt {attempt})"),
        Event::AnswerLost { reason } => {
            format!("the terminal's answer was lost ({reason}); asking the terminal")
        }
        Event::Asking { attempt, .. } => {
            format!("asking the terminal for the outcome (attempt {attempt})")
        }
    }
}

impl Payments {
    /// Payments through the pairings of data directory `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: terminals_dir(data_dir),
            locks: Mutex::new(HashMap::new()),
            running: Mutex::new(HashSet::new()),
            progress: Mutex::new(HashMap::new()),
        }
    }

    /// The paired terminals.
    pub async fn terminals(&self) -> Result<Vec<Paired>, SalesError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || PairingStore::new(&dir).list())
            .await
            .map_err(|_| SalesError::Store(StoreError::Stopped))?
            .map_err(|e| SalesError::Refused(e.to_string()))
    }

    /// Whether payment `id` runs in this process.
    pub fn is_running(&self, id: i64) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    }

    /// The terminal's latest progress lines of running payment `id`,
    /// oldest first (none once it has ended).
    pub fn progress(&self, id: i64) -> Vec<String> {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self, poi_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(poi_id.to_string())
            .or_default()
            .clone()
    }

    fn options(&self, poi_id: &str) -> phone::Options {
        phone::Options {
            terminal: Some(poi_id.to_string()),
            // Its status page shows the terminal's progress.
            progress: true,
            ..phone::Options::new(self.dir.clone())
        }
    }

    /// The Sale system paired with `poi_id`, opened off the async threads.
    async fn phone(&self, poi_id: &str) -> Result<Phone, PhoneError> {
        let options = self.options(poi_id);
        tokio::task::spawn_blocking(move || Phone::open(options))
            .await
            .map_err(|e| PhoneError::BadAnswer(format!("opening the pairing: {e}")))?
    }

    /// Starts a payment of order `order_id` (its part numbered `part`)
    /// on terminal `poi_id`: returns once it is written `pending`, and
    /// asks the terminal in a task of its own, which records the outcome
    /// whoever waits for it.
    pub async fn start(
        self: &Arc<Self>,
        store: &Arc<Store>,
        order_id: i64,
        part: Option<i64>,
        poi_id: &str,
        actor: &str,
    ) -> Result<Started, SalesError> {
        if !self.terminals().await?.iter().any(|t| t.poi_id == poi_id) {
            return Err(SalesError::Refused(format!(
                "terminal {poi_id:?} is not paired with the back office"
            )));
        }
        let (terminal, who) = (poi_id.to_string(), actor.to_string());
        let started = store
            .call(move |s| {
                s.write(|tx| orders::start_payment(tx, order_id, part, &terminal, &who, unix_now()))
            })
            .await?;
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(started.payment_id);
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                started.payment_id,
                VecDeque::from(["sending to the terminal".to_string()]),
            );
        let (payments, store, actor, task) = (
            self.clone(),
            store.clone(),
            actor.to_string(),
            started.clone(),
        );
        // Its outcome is recorded (or the failure logged) by `run`.
        tokio::spawn(async move {
            let _ = payments.run(&store, task, &actor).await;
        });
        Ok(started)
    }

    /// Asks the terminal for payment `started` and records the outcome.
    async fn run(
        &self,
        store: &Arc<Store>,
        started: Started,
        actor: &str,
    ) -> Result<Payment, SalesError> {
        let _running = Running {
            payments: self,
            id: started.payment_id,
        };
        let lock = self.lock(&started.terminal);
        let _turn = lock.lock().await;
        let outcome = match self.ask(&started).await {
            Ok(answer) => outcome_of(&answer),
            Err(e) => outcome_of_error(&e),
        };
        match &outcome.status {
            Some(PaymentStatus::Approved) => tracing::info!(
                payment = started.payment_id,
                order = started.order_id,
                poi_transaction = outcome.poi_transaction_id.as_deref().unwrap_or(""),
                "payment approved"
            ),
            status => tracing::warn!(
                payment = started.payment_id,
                order = started.order_id,
                ?status,
                reason = outcome.reason.as_deref().unwrap_or(""),
                "payment not approved"
            ),
        }
        record(store, started.payment_id, outcome, actor).await
    }

    /// Asks the terminal of approved payment `payment_id` for a refund of
    /// `amount` (all that is left when none) or a reversal, authorized by
    /// the terminal's supervisor code `code`, and waits for its outcome.
    /// It runs in a task of its own, as a payment does.
    pub async fn refund(
        self: &Arc<Self>,
        store: &Arc<Store>,
        payment_id: i64,
        kind: refunds::Kind,
        amount: Option<i64>,
        code: &str,
        actor: &str,
    ) -> Result<refunds::Refund, SalesError> {
        let code =
            SupervisorCode::new(code.trim()).map_err(|e| SalesError::Refused(e.to_string()))?;
        let who = actor.to_string();
        let started = store
            .call(move |s| {
                s.write(|tx| refunds::start(tx, payment_id, kind, amount, &who, unix_now()))
            })
            .await?;
        let (payments, store, actor) = (self.clone(), store.clone(), actor.to_string());
        tokio::spawn(async move { payments.run_refund(&store, started, code, &actor).await })
            .await
            .map_err(|_| SalesError::Store(StoreError::Stopped))?
    }

    async fn run_refund(
        &self,
        store: &Arc<Store>,
        started: refunds::Started,
        code: SupervisorCode,
        actor: &str,
    ) -> Result<refunds::Refund, SalesError> {
        let lock = self.lock(&started.terminal);
        let _turn = lock.lock().await;
        let answer = async {
            let mut phone = self.phone(&started.terminal).await?;
            let mut progress = |event| tracing::debug!(?event, "refund progress");
            match started.kind {
                refunds::Kind::Refund => {
                    let (currency, _) = terminal::receipt::currency_code(started.currency);
                    let money = Money::from_minor(started.amount.unsigned_abs(), &currency)?;
                    phone
                        .refund(&money, &started.original, None, &code, &mut progress)
                        .await
                }
                refunds::Kind::Reversal => {
                    phone
                        .reverse(&started.original, None, &code, &mut progress)
                        .await
                }
            }
        }
        .await;
        let outcome = match answer {
            Ok(answer) => outcome_of(&answer),
            Err(e) => outcome_of_error(&e),
        };
        tracing::info!(
            refund = started.refund_id,
            kind = started.kind.name(),
            status = ?outcome.status,
            "refund finished"
        );
        let (id, actor) = (started.refund_id, actor.to_string());
        store
            .call(move |s| s.write(|tx| refunds::record(tx, id, &outcome, &actor, unix_now())))
            .await
    }

    async fn ask(&self, started: &Started) -> Result<phone::Outcome, PhoneError> {
        let (code, _) = terminal::receipt::currency_code(started.currency);
        let money = Money::from_minor(started.amount.unsigned_abs(), &code)?;
        let mut phone = self.phone(&started.terminal).await?;
        let id = started.payment_id;
        phone
            .pay(&money, &mut |event| {
                tracing::debug!(?event, "payment progress");
                let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(lines) = progress.get_mut(&id) {
                    if lines.len() >= PROGRESS_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(progress_line(&event));
                }
            })
            .await
    }

    /// Learns what became of payment `id`, pending after a restart or of
    /// unknown outcome, by asking its terminal (`TransactionStatus`). A
    /// pending payment the Sale system has no record of was never sent.
    pub async fn check(
        self: &Arc<Self>,
        store: &Arc<Store>,
        id: i64,
        actor: &str,
    ) -> Result<Payment, SalesError> {
        let payment = store
            .call(move |s| s.read(|c| Ok(orders::payment(c, id))))
            .await??
            .ok_or_else(|| SalesError::NotFound(format!("payment {id}")))?;
        if !matches!(
            payment.status,
            PaymentStatus::Pending | PaymentStatus::Unknown
        ) || self.is_running(id)
        {
            return Ok(payment);
        }
        let lock = self.lock(&payment.terminal);
        let _turn = lock.lock().await;
        let mut phone = match self.phone(&payment.terminal).await {
            Ok(phone) => phone,
            Err(e) => return Err(SalesError::Refused(e.to_string())),
        };
        let service_id = match &payment.service_id {
            Some(s) => s.clone(),
            None => match unclaimed(store, candidates(&phone, &payment)?).await? {
                Some(s) => s,
                None => {
                    let outcome = Outcome {
                        status: Some(PaymentStatus::Failed),
                        reason: Some(
                            "the back office stopped before the payment was sent: no money moved"
                                .into(),
                        ),
                        ..Outcome::default()
                    };
                    return record(store, id, outcome, actor).await;
                }
            },
        };
        let outcome = asked(&mut phone, service_id, "payment").await;
        record(store, id, outcome, actor).await
    }

    /// Learns what became of refund or reversal `id`, of unknown outcome,
    /// by asking its terminal (`TransactionStatus`), as [`Payments::check`]
    /// does for a payment.
    pub async fn check_refund(
        self: &Arc<Self>,
        store: &Arc<Store>,
        id: i64,
        actor: &str,
    ) -> Result<refunds::Refund, SalesError> {
        let read = || {
            store.call(move |s| {
                s.read(|c| Ok(refunds::refund(c, id)))?
                    .and_then(|r| r.ok_or_else(|| SalesError::NotFound(format!("refund {id}"))))
            })
        };
        let terminal = read().await?.terminal;
        // Under the terminal's turn: a refund still running has ended and
        // been recorded by then.
        let lock = self.lock(&terminal);
        let _turn = lock.lock().await;
        let refund = read().await?;
        if refund.status != PaymentStatus::Unknown {
            return Ok(refund);
        }
        let Some(service_id) = refund.service_id.clone() else {
            return Err(SalesError::Refused(format!(
                "refund {id} has no ServiceID: the terminal's journal (posnet terminal history) says whether it was made"
            )));
        };
        let mut phone = self
            .phone(&refund.terminal)
            .await
            .map_err(|e| SalesError::Refused(e.to_string()))?;
        let outcome = asked(&mut phone, service_id, refund.kind.name()).await;
        let actor = actor.to_string();
        store
            .call(move |s| s.write(|tx| refunds::record(tx, id, &outcome, &actor, unix_now())))
            .await
    }
}

/// What the terminal says of this Sale system's exchange `service_id`, a
/// `what` (`TransactionStatus`): its answer repeated, "never received"
/// (failed: nothing moved), or still unknown.
async fn asked(phone: &mut Phone, service_id: String, what: &str) -> Outcome {
    let report = phone
        .status(&service_id, &mut |event| {
            tracing::debug!(?event, "status progress")
        })
        .await;
    match report {
        Ok(report) => match report.repeated {
            Some(response) if report.mismatches.is_empty() => {
                outcome_of(&answered(&service_id, response))
            }
            _ if report.status.response.error_condition == Some(ErrorCondition::NotFound) => {
                Outcome {
                    status: Some(PaymentStatus::Failed),
                    reason: Some(format!(
                        "the terminal never received {what} {service_id}: no money moved"
                    )),
                    service_id: Some(service_id),
                    ..Outcome::default()
                }
            }
            _ => Outcome {
                status: Some(PaymentStatus::Unknown),
                reason: Some(format!(
                    "the terminal does not know yet: {}",
                    phone::explain::reason(&report.status.response)
                )),
                service_id: Some(service_id),
                ..Outcome::default()
            },
        },
        Err(e) => Outcome {
            status: Some(PaymentStatus::Unknown),
            reason: Some(format!("asking the terminal failed: {e}")),
            service_id: Some(service_id),
            ..Outcome::default()
        },
    }
}

fn answered(service_id: &str, response: SaleToPoiResponse) -> phone::Outcome {
    phone::Outcome {
        service_id: service_id.to_string(),
        response,
        recovered: Some("its outcome was unknown to the back office".into()),
    }
}

/// The `ServiceID`s of the Sale system's payment requests that may be
/// `payment`'s (cut short by a restart before its outcome was recorded):
/// payments to its terminal of its amount started after it, oldest first.
fn candidates(phone: &Phone, payment: &Payment) -> Result<Vec<String>, SalesError> {
    let records = phone
        .history()
        .list(HISTORY_SEARCH)
        .map_err(|e| SalesError::Refused(e.to_string()))?;
    let (code, _) = terminal::receipt::currency_code(payment.currency);
    Ok(records
        .into_iter()
        .rev()
        .filter(|r| {
            r.kind == phone::history::Kind::Payment
                && r.poi_id == payment.terminal
                && r.amount_minor == Some(payment.amount.unsigned_abs())
                && r.currency.as_deref() == Some(code.as_str())
                && started_unix(&r.started_at).is_some_and(|t| t >= payment.started_at)
        })
        .map(|r| r.service_id)
        .collect())
}

/// The first of `candidates` that is no other payment's; none when nothing
/// was sent for the payment.
async fn unclaimed(
    store: &Arc<Store>,
    candidates: Vec<String>,
) -> Result<Option<String>, SalesError> {
    store
        .call(move |s| {
            s.read(|c| {
                for service_id in candidates {
                    let taken: i64 = c.query_row(
                        "SELECT count(*) FROM order_payments WHERE service_id = ?1",
                        [&service_id],
                        |r| r.get(0),
                    )?;
                    if taken == 0 {
                        return Ok(Some(service_id));
                    }
                }
                Ok(None)
            })
        })
        .await
        .map_err(SalesError::from)
}

/// Unix seconds of a nexo time stamp (RFC 3339).
fn started_unix(stamp: &str) -> Option<i64> {
    time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Confirms device payment `id`, reported approved, against the host: with
/// the host's record of the transaction here already (its webhook), or,
/// when not and the host's API is configured, after fetching what the
/// host has since ([`crate::backfill::backfill`]). Stays awaiting
/// confirmation when the host has no such transaction.
pub async fn confirm_with_host(
    store: &Arc<Store>,
    host: Option<&HostApi>,
    id: i64,
    actor: &str,
) -> Result<Payment, SalesError> {
    let confirm = || {
        let actor = actor.to_string();
        store.call(move |s| s.write(|tx| orders::confirm_reported(tx, id, &actor, unix_now())))
    };
    let payment = confirm().await?;
    match host {
        Some(api) if payment.awaiting_confirmation() => {
            if let Err(e) = crate::backfill::backfill(store, api, actor).await {
                tracing::warn!(
                    payment = id,
                    "asking the host for the payment's transaction failed: {e}"
                );
                return Ok(payment);
            }
            confirm().await
        }
        _ => Ok(payment),
    }
}

async fn record(
    store: &Arc<Store>,
    id: i64,
    outcome: Outcome,
    actor: &str,
) -> Result<Payment, SalesError> {
    let actor = actor.to_string();
    let recorded = store
        .call(move |s| s.write(|tx| orders::record_outcome(tx, id, &outcome, &actor, unix_now())))
        .await;
    if let Err(e) = &recorded {
        // The terminal's outcome is in the Sale system's history; "Ask the
        // terminal" on the order's page records it later.
        tracing::error!(payment = id, "recording a payment's outcome failed: {e}");
    }
    recorded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexo_time_stamps_read() {
        assert_eq!(started_unix("1970-01-01T00:01:40.000Z"), Some(100));
        assert_eq!(started_unix("yesterday"), None);
    }

    #[test]
    fn errors_that_may_have_moved_money_are_unknown() {
        let unknown = outcome_of_error(&PhoneError::Unknown {
            what: "payment",
            service_id: "0000000007".into(),
            lost: "timeout".into(),
            why: "unreachable".into(),
        });
        assert_eq!(unknown.status, Some(PaymentStatus::Unknown));
        assert_eq!(unknown.service_id.as_deref(), Some("0000000007"));
        let never = outcome_of_error(&PhoneError::NotReceived {
            what: "payment",
            service_id: "0000000008".into(),
            lost: "timeout".into(),
        });
        assert_eq!(never.status, Some(PaymentStatus::Failed));
        let refused = outcome_of_error(&PhoneError::SupervisorCode);
        assert_eq!(refused.status, Some(PaymentStatus::Failed));
        assert!(refused.reason.unwrap().contains("supervisor"));
    }
}
