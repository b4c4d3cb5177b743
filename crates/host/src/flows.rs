//! What each message asks for, and the decisions the host makes on it inside
//! one ledger transaction: the journal row, the transfer, the outbox event
//! and the exact response bytes all commit together, or none of them does.

use crate::issuer::{account_id, funding_account};
use crate::routing::Forwarded;
use crate::time::Now;
use iso8583::dialect::CUP;
use iso8583::message_set::TxnType;
use iso8583::{Field60, Message};
use ledger::{
    Currency, LedgerRead, LedgerTx, SqliteTx, TransferId, TransferRejection, TransferRequest,
};
use paycrypto::MacKey;
use paycrypto::paycode::{PaymentCode, PaymentCodeError, Verdict};
use pki::MasterKey;
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The transaction a message asks for, from its MTI, processing code (3),
/// transaction type (60.1) and network management code (60.3); see
/// docs/iso8583-dialect.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 0800, 60.3 = 001 or 003.
    SignOn,
    /// 0820, 60.3 = 002.
    SignOff,
    /// 0820, 60.3 = 301.
    Echo,
    /// 0800, 60.3 = 360.
    ParameterDownload,
    /// 0200, 310000, 60.1 = 01.
    Balance,
    /// 0200, 000000, 60.1 = 22.
    Sale,
    /// 0200, 200000, 60.1 = 23.
    Void,
    /// 0220, 200000, 60.1 = 25.
    Refund,
    /// 0100, 030000, 60.1 = 10.
    PreAuth,
    /// 0100, 200000, 60.1 = 11.
    PreAuthCancel,
    /// 0200, 000000, 60.1 = 20.
    Completion,
    /// 0200, 200000, 60.1 = 21.
    CompletionVoid,
    /// 0220, 000000, 60.1 = 30: a sale the terminal approved offline.
    OfflineAdvice,
    /// 0400: reversal of any reversible transaction.
    Reversal,
    /// 0500, 60.3 = 201.
    Settlement,
    /// 0320, 60.3 = 201: one transaction of the batch.
    BatchUpload,
    /// 0320, 60.3 = 202.
    BatchUploadEnd,
}

impl Kind {
    /// Classifies a request; `None` for anything outside the message set.
    pub fn classify(msg: &Message) -> Option<Kind> {
        Self::classify_as(msg.mti().as_str(), msg)
    }

    fn classify_as(mti: &str, msg: &Message) -> Option<Kind> {
        let f60 = msg.get_str(60).and_then(|t| Field60::parse(t).ok());
        let txn = f60.as_ref().map(|f| f.transaction_type);
        let code = f60.as_ref().and_then(|f| f.network_code);
        let pc = msg.processing_code().unwrap_or("");
        use Kind::*;
        if let Some(t) = txn.and_then(|t| TxnType::classify(mti, pc, t)) {
            return Some(match t {
                TxnType::Balance => Balance,
                TxnType::Sale => Sale,
                TxnType::Void => Void,
                TxnType::Refund => Refund,
                TxnType::PreAuth => PreAuth,
                TxnType::PreAuthCancel => PreAuthCancel,
                TxnType::Completion => Completion,
                TxnType::CompletionVoid => CompletionVoid,
                TxnType::OfflineSale => OfflineAdvice,
            });
        }
        Some(match (mti, txn, code) {
            ("0800", _, Some(1 | 3)) => SignOn,
            ("0800", _, Some(360)) => ParameterDownload,
            ("0820", _, Some(2)) => SignOff,
            ("0820", _, Some(301)) => Echo,
            ("0400", Some(_), _) => Reversal,
            ("0500", _, Some(201)) => Settlement,
            ("0320", _, Some(201)) => BatchUpload,
            ("0320", _, Some(202)) => BatchUploadEnd,
            _ => return None,
        })
    }

    /// The MTI and kind of the original a reversal names (by its 3 and 60.1).
    pub fn reversed(msg: &Message) -> Option<(&'static str, Kind)> {
        ["0200", "0100"]
            .into_iter()
            .find_map(|mti| Self::classify_as(mti, msg).map(|k| (mti, k)))
            .filter(|(_, k)| k.is_reversible())
    }

    /// Stable lowercase name, as stored in the journal and sent to merchants.
    pub fn name(self) -> &'static str {
        use Kind::*;
        match self {
            SignOn => "sign_on",
            SignOff => "sign_off",
            Echo => "echo",
            ParameterDownload => "parameter_download",
            Balance => "balance",
            Sale => "sale",
            Void => "void",
            Refund => "refund",
            PreAuth => "preauth",
            PreAuthCancel => "preauth_cancel",
            Completion => "completion",
            CompletionVoid => "completion_void",
            OfflineAdvice => "offline_sale",
            Reversal => "reversal",
            Settlement => "settlement",
            BatchUpload => "batch_upload",
            BatchUploadEnd => "batch_upload_end",
        }
    }

    /// Requests that must carry a valid MAC and KSN (everything but network management).
    pub fn needs_mac(self) -> bool {
        !matches!(
            self,
            Kind::SignOn | Kind::SignOff | Kind::Echo | Kind::ParameterDownload
        )
    }

    /// Requests recorded in the journal, answered exactly once.
    pub fn is_journaled(self) -> bool {
        !matches!(
            self,
            Kind::SignOn
                | Kind::SignOff
                | Kind::Echo
                | Kind::ParameterDownload
                | Kind::Settlement
                | Kind::BatchUpload
                | Kind::BatchUploadEnd
        )
    }

    /// Batch upload messages (detail or end).
    pub fn is_batch(self) -> bool {
        matches!(self, Kind::BatchUpload | Kind::BatchUploadEnd)
    }

    fn is_reversible(self) -> bool {
        matches!(
            self,
            Kind::Sale
                | Kind::Void
                | Kind::PreAuth
                | Kind::PreAuthCancel
                | Kind::Completion
                | Kind::CompletionVoid
                | Kind::Balance
        )
    }

    fn transfer_code(self) -> u16 {
        use Kind::*;
        match self {
            Sale => 1,
            Void => 2,
            Refund => 3,
            PreAuth => 4,
            PreAuthCancel => 5,
            Completion => 6,
            CompletionVoid => 7,
            OfflineAdvice => 8,
            Reversal => 9,
            _ => 0,
        }
    }
}

/// Card data the host derived from the request before the job runs.
#[derive(Debug, Clone)]
pub struct CardInput {
    /// Keyed token of the PAN.
    pub token: String,
    /// PAN masked to first 6 and last 4.
    pub masked_pan: String,
    /// Expiry YYMM from field 14 or track 2, when sent.
    pub expiry: Option<String>,
    /// Set when field 22 says a payment code was scanned: the code, or why
    /// field 2 is not one. The payment method is then `wallet`.
    pub code: Option<Result<PaymentCode, PaymentCodeError>>,
}

impl CardInput {
    /// `wallet` for a scanned payment code, else `card`.
    pub fn method(&self) -> &'static str {
        if self.code.is_some() {
            "wallet"
        } else {
            "card"
        }
    }
}

/// A card whose range an upstream host serves, held only until the request
/// is forwarded (the PAN and PIN are wiped when it is dropped).
pub struct RoutedCard {
    /// The route's BIN prefix.
    pub prefix: String,
    /// The card number, to send upstream.
    pub pan: String,
    /// Expiry YYMM.
    pub expiry: String,
    /// The PIN, to encipher under the upstream link's key.
    pub pin: Option<paycrypto::pinblock::Pin>,
}

impl Drop for RoutedCard {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.pan);
    }
}

impl std::fmt::Debug for RoutedCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedCard")
            .field("prefix", &self.prefix)
            .field("pan", &iso8583::text::mask_pan(&self.pan))
            .finish_non_exhaustive()
    }
}

/// Everything the committer needs to decide and answer one request.
pub struct Job {
    /// What is asked.
    pub kind: Kind,
    /// Set when an upstream host serves the card (taken before the job runs).
    pub routed: Option<RoutedCard>,
    /// The decoded request.
    pub request: Message,
    /// From the client certificate (equal to field 41).
    pub terminal_id: String,
    /// Field 11.
    pub stan: u32,
    /// 60.2.
    pub batch: u32,
    /// Field 4, 0 when absent.
    pub amount: u64,
    /// Field 49, ISO 4217 numeric.
    pub currency: u16,
    /// The card, when the request names one.
    pub card: Option<CardInput>,
    /// PIN check value of the PIN block, when one was sent.
    pub pin_check: Option<[u8; 32]>,
    /// Initial key id (hex) and counter of the request's KSN.
    pub ksn: Option<(String, u32)>,
    /// SHA-256 of the request's content (KSN and MAC excluded): tells a
    /// retransmission from a reuse of the STAN.
    pub request_hash: [u8; 32],
    /// Time of arrival.
    pub now: Now,
    /// Key that MACs the response (the KSN's MAC-verification key).
    pub response_mac: Option<MacKey>,
    /// Seconds between echoes, sent in the parameters.
    pub echo_interval: u32,
    /// The master key: opens the wallet secrets sealed at rest.
    pub master: Arc<MasterKey>,
}

/// A job failed in storage: the batch rolls it back and the terminal gets 96.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// SQLite failed.
    #[error("host tables: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The ledger's storage failed.
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::StoreError),
    /// A response could not be encoded (a bug: requests were validated).
    #[error("encoding the response: {0}")]
    Encode(#[from] iso8583::EncodeError),
    /// The response MAC could not be computed.
    #[error("response MAC: {0}")]
    Mac(String),
}

struct Decision {
    code: &'static str,
    state: &'static str,
    transfer: Option<TransferId>,
    original: Option<i64>,
    extra: Vec<(u8, Vec<u8>)>,
    /// Approval code given by an upstream host.
    auth: Option<String>,
    /// The upstream transaction, for routed sales.
    upstream: Option<String>,
}

impl Decision {
    fn decline(code: &'static str) -> Self {
        Decision {
            code,
            state: "declined",
            transfer: None,
            original: None,
            extra: Vec::new(),
            auth: None,
            upstream: None,
        }
    }
    fn approve(transfer: Option<TransferId>) -> Self {
        Decision {
            code: "00",
            state: "approved",
            transfer,
            original: None,
            extra: Vec::new(),
            auth: None,
            upstream: None,
        }
    }
}

/// The transfer id of a request: a function of what identifies the request,
/// so that even a retry that slipped past the journal cannot charge twice.
pub fn transfer_id(terminal_id: &str, mti: &str, stan: u32, batch: u32) -> TransferId {
    let digest = Sha256::digest(format!("{terminal_id}/{mti}/{stan}/{batch}"));
    TransferId(u128::from_be_bytes(
        digest[..16].try_into().expect("16 bytes"),
    ))
}

fn id_bytes(id: TransferId) -> Vec<u8> {
    id.0.to_be_bytes().to_vec()
}

/// An account id as the host's tables store it (16 bytes, big-endian); the
/// schema's length checks make any other size impossible.
fn stored_account(bytes: Vec<u8>) -> ledger::AccountId {
    ledger::AccountId(u128::from_be_bytes(
        bytes.as_slice().try_into().unwrap_or([0; 16]),
    ))
}

/// A transfer id as the journal stores it (16 bytes, big-endian).
pub(crate) fn id_from(bytes: Option<Vec<u8>>) -> Option<TransferId> {
    bytes
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(|b| TransferId(u128::from_be_bytes(b)))
}

fn reject_code(rejection: TransferRejection) -> &'static str {
    use TransferRejection::*;
    match rejection {
        ExceedsCredits => "51",
        ExceedsPendingTransferAmount | ExceedsLinkedTransferAmount | AmountMustNotBeZero => "13",
        PendingTransferAlreadyPosted | PendingTransferAlreadyVoided | PendingTransferNotPending => {
            "12"
        }
        DebitAccountNotFound | CreditAccountNotFound => "14",
        DebitAccountClosed | CreditAccountClosed => "05",
        AccountsHaveDifferentCurrencies | CurrencyMismatch => "13",
        PendingTransferNotFound | LinkedTransferNotFound | LinkedTransferNotPosted => "25",
        _ => "96",
    }
}

struct TerminalRow {
    merchant_id: String,
    status: String,
    initial_key_id: String,
    last_ksn: u32,
    max_amount: u64,
    offline_floor: u64,
    param_version: u32,
}

struct MerchantRow {
    name: String,
    account: ledger::AccountId,
    currency: u16,
    max_amount: u64,
    fee_bps: u64,
}

/// A card's or wallet's issuer record (a wallet has no expiry or PIN).
struct CardRow {
    account: ledger::AccountId,
    expiry: Option<String>,
    pin_check: Option<Vec<u8>>,
    status: String,
    per_txn_limit: u64,
    daily_limit: u64,
    currency: u16,
}

struct Original {
    id: i64,
    kind: String,
    amount: u64,
    state: String,
    transfer: Option<TransferId>,
}

/// `query_row` through the connection's statement cache: each of the
/// host's statements runs on every request, and preparing them anew took a
/// fifth of the committer's time under load.
fn query_row<T, P: rusqlite::Params>(
    tx: &SqliteTx<'_>,
    sql: &str,
    params: P,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.sql().prepare_cached(sql)?.query_row(params, row)
}

/// `execute` through the connection's statement cache (see [`query_row`]).
fn execute<P: rusqlite::Params>(
    tx: &SqliteTx<'_>,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    tx.sql().prepare_cached(sql)?.execute(params)
}

/// Runs one job inside the open transaction and returns the response bytes.
pub fn run(tx: &mut SqliteTx<'_>, job: &Job) -> Result<Vec<u8>, JobError> {
    run_with(tx, job, None)
}

/// [`run`] for a sale an upstream host already answered (BIN routing): the
/// local decision records the upstream's outcome instead of the local issuer's.
pub fn run_with(
    tx: &mut SqliteTx<'_>,
    job: &Job,
    forwarded: Option<&Forwarded>,
) -> Result<Vec<u8>, JobError> {
    let mti = job.request.mti();
    if job.kind.is_journaled() {
        let seen: Option<(Vec<u8>, Vec<u8>)> = query_row(tx,
                "SELECT request_hash, response FROM journal WHERE terminal_id = ?1 AND mti = ?2 AND stan = ?3 AND batch = ?4",
                params![job.terminal_id, mti.as_str(), job.stan, job.batch],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((hash, response)) = seen {
            // A retransmission gets the first answer; a different request
            // reusing the STAN is a duplicate and changes nothing.
            return if hash == job.request_hash {
                remac(job, &response)
            } else {
                respond(job, "94", &[], None)
            };
        }
    }
    let Some(terminal) = load_terminal(tx, &job.terminal_id)? else {
        return respond(job, "96", &[], None);
    };
    if terminal.status != "active" {
        return respond(job, "05", &[], None);
    }
    if let Some((key_id, counter)) = &job.ksn {
        if *key_id != terminal.initial_key_id || *counter <= terminal.last_ksn {
            tracing::warn!(terminal = %job.terminal_id, counter, last = terminal.last_ksn, "replayed or foreign KSN refused");
            return respond(job, "A0", &[], None);
        }
        execute(
            tx,
            "UPDATE terminals SET last_ksn_counter = ?2 WHERE terminal_id = ?1",
            params![job.terminal_id, counter],
        )?;
    }
    let merchant = load_merchant(tx, &terminal.merchant_id)?;
    match job.kind {
        Kind::SignOn | Kind::ParameterDownload => {
            execute(
                tx,
                "UPDATE terminals SET signed_on_at = ?2 WHERE terminal_id = ?1",
                params![job.terminal_id, job.now.unix],
            )?;
            let params = parameters(&terminal, &merchant, job.echo_interval);
            return respond(job, "00", &[(62, params)], None);
        }
        Kind::SignOff => {
            execute(
                tx,
                "UPDATE terminals SET signed_on_at = NULL WHERE terminal_id = ?1",
                params![job.terminal_id],
            )?;
            return respond(job, "00", &[], None);
        }
        Kind::Echo => return respond(job, "00", &[], None),
        Kind::Settlement => return settle(tx, job, &merchant),
        Kind::BatchUpload => {
            execute(
                tx,
                "UPDATE settlements SET uploaded = uploaded + 1 WHERE id = (SELECT max(id) FROM settlements WHERE terminal_id = ?1 AND batch = ?2)",
                params![job.terminal_id, job.batch],
            )?;
            return respond(job, "00", &[], None);
        }
        Kind::BatchUploadEnd => {
            execute(
                tx,
                "UPDATE settlements SET closed_at = ?3 WHERE id = (SELECT max(id) FROM settlements WHERE terminal_id = ?1 AND batch = ?2)",
                params![job.terminal_id, job.batch, job.now.unix],
            )?;
            return respond(job, "00", &[], None);
        }
        _ => {}
    }
    let decision = match forwarded {
        Some(f) if job.kind == Kind::Sale => decide_forwarded(tx, job, &merchant, f)?,
        _ => decide(tx, job, &terminal, &merchant)?,
    };
    record(tx, job, &terminal.merchant_id, decision)
}

/// Response codes an upstream may answer with, as the journal stores them.
const UPSTREAM_CODES: [&str; 15] = [
    "00", "05", "12", "13", "14", "25", "30", "51", "54", "55", "61", "91", "94", "96", "A0",
];

/// Records an upstream's answer to a sale: on approval the acquirer owes the
/// merchant and is owed by the upstream issuer (its settlement account).
fn decide_forwarded(
    tx: &mut SqliteTx<'_>,
    job: &Job,
    merchant: &MerchantRow,
    f: &Forwarded,
) -> Result<Decision, JobError> {
    let code = UPSTREAM_CODES
        .into_iter()
        .find(|c| *c == f.code)
        .unwrap_or("05");
    if code != "00" {
        return Ok(Decision::decline(code));
    }
    let currency = Currency(merchant.currency);
    let settlement = account_id("issuer settlement", &format!("{}/{}", f.route, currency.0));
    ensure_account(
        tx,
        settlement,
        currency,
        ledger::AccountKind::IssuerSettlement,
    )?;
    let merchant_account = merchant.account;
    let id = transfer_id(
        &job.terminal_id,
        job.request.mti().as_str(),
        job.stan,
        job.batch,
    );
    let request = TransferRequest::single(id, settlement, merchant_account, job.amount, currency)
        .code(Kind::Sale.transfer_code());
    match transfer(tx, &request)? {
        Ok(()) => Ok(Decision {
            auth: f.auth_code.clone(),
            upstream: f.upstream.map(|(b, s)| format!("{}:{b}:{s}", f.route)),
            ..Decision::approve(Some(id))
        }),
        // The upstream approved but the local books refuse: the sale must not
        // stand upstream either; answer 96 so the terminal reverses it.
        Err(code) => {
            tracing::error!(terminal = %job.terminal_id, code, "upstream approval could not be booked");
            Ok(Decision::decline("96"))
        }
    }
}

fn decide(
    tx: &mut SqliteTx<'_>,
    job: &Job,
    terminal: &TerminalRow,
    merchant: &MerchantRow,
) -> Result<Decision, JobError> {
    let currency = Currency(job.currency);
    let merchant_account = merchant.account;
    let id = transfer_id(
        &job.terminal_id,
        job.request.mti().as_str(),
        job.stan,
        job.batch,
    );
    let code = job.kind.transfer_code();
    match job.kind {
        Kind::Sale | Kind::PreAuth | Kind::Balance | Kind::OfflineAdvice => {
            // A reversal that arrived before its original (the terminal timed
            // out first) keeps the late original from charging.
            if reversal_recorded(tx, job)? {
                return Ok(Decision::decline("05"));
            }
            let card = match check_card(tx, job, terminal, merchant)? {
                Ok(card) => card,
                Err(code) if job.kind == Kind::OfflineAdvice => {
                    tracing::warn!(terminal = %job.terminal_id, code, "offline sale for a card the host would decline");
                    return Ok(Decision {
                        state: "unfunded",
                        ..Decision::approve(None)
                    });
                }
                Err(code) => return Ok(Decision::decline(code)),
            };
            let card_account = card.account;
            if job.kind == Kind::Balance {
                let available = tx
                    .balances(card_account)?
                    .map(|b| b.available_to_debit())
                    .unwrap_or(0);
                let field54 = format!("1002{:03}C{:012}", card.currency, available);
                return Ok(Decision {
                    extra: vec![(54, field54.into_bytes())],
                    ..Decision::approve(None)
                });
            }
            let request = if job.kind == Kind::PreAuth {
                TransferRequest::pending(id, card_account, merchant_account, job.amount, currency)
            } else {
                TransferRequest::single(id, card_account, merchant_account, job.amount, currency)
            };
            match transfer(tx, &request.code(code))? {
                Ok(()) => Ok(Decision::approve(Some(id))),
                Err(_) if job.kind == Kind::OfflineAdvice => Ok(Decision {
                    state: "unfunded",
                    ..Decision::approve(None)
                }),
                Err(code) => Ok(Decision::decline(code)),
            }
        }
        Kind::Void
        | Kind::Refund
        | Kind::PreAuthCancel
        | Kind::Completion
        | Kind::CompletionVoid => {
            let (orig_mti, orig_kinds, states): (&str, &[&str], &[&str]) = match job.kind {
                Kind::Void => ("0200", &["sale"], &["approved"]),
                Kind::Refund => (
                    "0200",
                    &["sale", "completion", "offline_sale"],
                    &["approved", "refunded"],
                ),
                Kind::PreAuthCancel | Kind::Completion => ("0100", &["preauth"], &["approved"]),
                _ => ("0200", &["completion"], &["approved"]),
            };
            let Some(original) = original_from_61(tx, job, orig_mti)? else {
                return Ok(Decision::decline("25"));
            };
            if !orig_kinds.contains(&original.kind.as_str())
                || !states.contains(&original.state.as_str())
            {
                return Ok(Decision {
                    original: Some(original.id),
                    ..Decision::decline("12")
                });
            }
            let Some(orig_transfer) = original.transfer else {
                return Ok(Decision {
                    original: Some(original.id),
                    ..Decision::decline("12")
                });
            };
            let request = match job.kind {
                Kind::Void | Kind::CompletionVoid if job.amount != original.amount => {
                    return Ok(Decision {
                        original: Some(original.id),
                        ..Decision::decline("13")
                    });
                }
                Kind::PreAuthCancel => TransferRequest::void(id, orig_transfer),
                Kind::Completion => TransferRequest::post(id, orig_transfer, job.amount),
                _ => {
                    let t = tx
                        .get_transfer(orig_transfer)?
                        .expect("journal names an existing transfer");
                    TransferRequest::single(
                        id,
                        t.credit_account,
                        t.debit_account,
                        job.amount,
                        currency,
                    )
                    .linked(orig_transfer)
                }
            };
            match transfer(tx, &request.code(code))? {
                Ok(()) => {
                    let new_state = match job.kind {
                        Kind::Void | Kind::CompletionVoid => "voided",
                        Kind::Refund => "refunded",
                        Kind::PreAuthCancel => "cancelled",
                        _ => "completed",
                    };
                    set_state(tx, original.id, new_state)?;
                    Ok(Decision {
                        original: Some(original.id),
                        ..Decision::approve(Some(id))
                    })
                }
                Err(code) => Ok(Decision {
                    original: Some(original.id),
                    ..Decision::decline(code)
                }),
            }
        }
        Kind::Reversal => reverse(tx, job, id),
        _ => Ok(Decision::decline("12")),
    }
}

/// Creates a transfer; a ledger rejection becomes its response code.
fn transfer(
    tx: &mut SqliteTx<'_>,
    request: &TransferRequest,
) -> Result<Result<(), &'static str>, JobError> {
    match tx.create_transfer(request) {
        Ok(_) => Ok(Ok(())),
        Err(ledger::TransferError::Rejected { rejection, .. }) => Ok(Err(reject_code(rejection))),
        Err(ledger::TransferError::Store(e)) => Err(e.into()),
    }
}

fn reverse(tx: &mut SqliteTx<'_>, job: &Job, id: TransferId) -> Result<Decision, JobError> {
    let Some((orig_mti, _)) = Kind::reversed(&job.request) else {
        return Ok(Decision::decline("12"));
    };
    let original = find_original(tx, &job.terminal_id, orig_mti, job.stan, job.batch)?;
    let Some(original) = original else {
        tracing::info!(terminal = %job.terminal_id, stan = job.stan, "reversal of an unknown original recorded; a late original will be refused");
        return Ok(Decision {
            state: "orphan",
            ..Decision::decline("25")
        });
    };
    let done = |state| Decision {
        original: Some(original.id),
        state,
        ..Decision::approve(None)
    };
    if original.state == "declined" || original.state == "reversed" || original.kind == "balance" {
        return Ok(done("approved"));
    }
    let Some(orig_transfer) = original.transfer else {
        return Ok(done("approved"));
    };
    let request = match original.kind.as_str() {
        "preauth" if original.state == "approved" => TransferRequest::void(id, orig_transfer),
        "sale" | "completion" | "void" | "completion_void"
            if matches!(original.state.as_str(), "approved") =>
        {
            let t = tx
                .get_transfer(orig_transfer)?
                .expect("journal names an existing transfer");
            TransferRequest::single(id, t.credit_account, t.debit_account, t.amount, t.currency)
                .linked(orig_transfer)
        }
        _ => {
            // Already voided, refunded, completed or cancelled: undoing the
            // original alone would unbalance what followed it.
            return Ok(Decision {
                original: Some(original.id),
                ..Decision::decline("12")
            });
        }
    };
    match transfer(tx, &request.code(Kind::Reversal.transfer_code()))? {
        Ok(()) => {
            set_state(tx, original.id, "reversed")?;
            if matches!(original.kind.as_str(), "void" | "completion_void") {
                // The voided original stands again.
                execute(
                    tx,
                    "UPDATE journal SET state = 'approved' WHERE id = (SELECT original_id FROM journal WHERE id = ?1)",
                    params![original.id],
                )?;
            }
            Ok(Decision {
                original: Some(original.id),
                ..Decision::approve(Some(id))
            })
        }
        Err(code) => Ok(Decision {
            original: Some(original.id),
            ..Decision::decline(code)
        }),
    }
}

fn check_card(
    tx: &mut SqliteTx<'_>,
    job: &Job,
    terminal: &TerminalRow,
    merchant: &MerchantRow,
) -> Result<Result<CardRow, &'static str>, JobError> {
    let Some(input) = &job.card else {
        return Ok(Err("14"));
    };
    let card = match &input.code {
        None => load_card(tx, &input.token)?,
        Some(Err(_)) => None,
        Some(Ok(code)) => match check_code(tx, job, code)? {
            Ok(wallet) => Some(wallet),
            Err(code) => return Ok(Err(code)),
        },
    };
    let Some(card) = card else {
        return Ok(Err("14"));
    };
    if card.status != "active" {
        return Ok(Err("05"));
    }
    if let Some(expiry) = &card.expiry {
        if expiry.as_str() < job.now.yymm.as_str() {
            return Ok(Err("54"));
        }
        if input.expiry.as_ref().is_some_and(|e| e != expiry) {
            return Ok(Err("14"));
        }
    }
    if let Some(expected) = &card.pin_check {
        let ok = job
            .pin_check
            .is_some_and(|got| bool::from(got.ct_eq(expected.as_slice())));
        if !ok && job.kind != Kind::OfflineAdvice {
            return Ok(Err("55"));
        }
    }
    if job.kind == Kind::Balance {
        return Ok(Ok(card));
    }
    if job.amount == 0 || job.currency != card.currency || job.currency != merchant.currency {
        return Ok(Err("13"));
    }
    if job.kind == Kind::OfflineAdvice && job.amount > terminal.offline_floor {
        return Ok(Err("61"));
    }
    if job.amount > terminal.max_amount
        || job.amount > merchant.max_amount
        || job.amount > card.per_txn_limit
    {
        return Ok(Err("61"));
    }
    // Answered from the covering index journal_card_spend.
    let today: u64 = query_row(
        tx,
        "SELECT coalesce(sum(amount), 0) FROM journal WHERE card_token = ?1 AND created_at >= ?2
         AND kind IN ('sale', 'preauth', 'offline_sale') AND state IN ('approved', 'completed', 'refunded')",
        params![input.token, job.now.day_start],
        |r| r.get::<_, i64>(0),
    )? as u64;
    if today + job.amount > card.daily_limit {
        return Ok(Err("61"));
    }
    Ok(Ok(card))
}

/// Purpose the wallet secrets are sealed for.
pub const WALLET_SECRET_PURPOSE: &str = "wallet secret";

/// The wallet a payment code names, if the code is its code for now and
/// was not used before (docs/iso8583-dialect.md, "Field 22 and wallet
/// payment codes"): 14 for no such wallet or a code that is not its code,
/// 54 for an expired code, 94 for a code used before, 05 for a wallet not
/// active. A valid code is spent here, whatever the sale's outcome.
fn check_code(
    tx: &mut SqliteTx<'_>,
    job: &Job,
    code: &PaymentCode,
) -> Result<Result<CardRow, &'static str>, JobError> {
    let number = code.wallet().to_string();
    let row = query_row(tx,
            "SELECT account_id, secret_sealed, status, last_step, per_txn_limit, daily_limit, currency FROM wallets WHERE number = ?1",
            params![number],
            |r| {
                Ok((
                    CardRow {
                        account: stored_account(r.get(0)?),
                        expiry: None,
                        pin_check: None,
                        status: r.get(2)?,
                        per_txn_limit: r.get::<_, i64>(4)? as u64,
                        daily_limit: r.get::<_, i64>(5)? as u64,
                        currency: r.get(6)?,
                    },
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((wallet, sealed, last_step)) = row else {
        return Ok(Err("14"));
    };
    if wallet.status != "active" {
        return Ok(Err("05"));
    }
    let totp = job
        .master
        .open(
            WALLET_SECRET_PURPOSE,
            &sealed,
            std::path::Path::new("wallets"),
        )
        .map_err(|e| e.to_string())
        .and_then(|secret| {
            code.wallet()
                .generator(secret.expose())
                .map_err(|e| e.to_string())
        });
    let totp = match totp {
        Ok(totp) => totp,
        Err(e) => {
            tracing::error!(wallet = %number, "wallet secret unusable: {e}");
            return Ok(Err("96"));
        }
    };
    let unix = u64::try_from(job.now.unix).unwrap_or(0);
    let last_step = last_step.and_then(|s| u64::try_from(s).ok());
    match code.check(&totp, unix, last_step) {
        Verdict::Valid { step } => {
            execute(
                tx,
                "UPDATE wallets SET last_step = ?2 WHERE number = ?1",
                params![number, step as i64],
            )?;
            Ok(Ok(wallet))
        }
        Verdict::Used => Ok(Err("94")),
        Verdict::Expired => Ok(Err("54")),
        Verdict::Wrong => Ok(Err("14")),
    }
}

fn reversal_recorded(tx: &SqliteTx<'_>, job: &Job) -> Result<bool, JobError> {
    Ok(query_row(tx,
            "SELECT 1 FROM journal WHERE terminal_id = ?1 AND mti = '0400' AND stan = ?2 AND batch = ?3",
            params![job.terminal_id, job.stan, job.batch],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn original_from_61(tx: &SqliteTx<'_>, job: &Job, mti: &str) -> Result<Option<Original>, JobError> {
    let Some(f61) = job.request.get_str(61).filter(|t| t.len() >= 12) else {
        return Ok(None);
    };
    let (Ok(batch), Ok(stan)) = (f61[0..6].parse::<u32>(), f61[6..12].parse::<u32>()) else {
        return Ok(None);
    };
    find_original(tx, &job.terminal_id, mti, stan, batch)
}

fn find_original(
    tx: &SqliteTx<'_>,
    terminal: &str,
    mti: &str,
    stan: u32,
    batch: u32,
) -> Result<Option<Original>, JobError> {
    Ok(query_row(tx,
            "SELECT id, kind, amount, state, transfer_id FROM journal WHERE terminal_id = ?1 AND mti = ?2 AND stan = ?3 AND batch = ?4",
            params![terminal, mti, stan, batch],
            |r| {
                Ok(Original {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    amount: r.get::<_, i64>(2)? as u64,
                    state: r.get(3)?,
                    transfer: id_from(r.get(4)?),
                })
            },
        )
        .optional()?)
}

fn set_state(tx: &SqliteTx<'_>, id: i64, state: &str) -> Result<(), JobError> {
    execute(
        tx,
        "UPDATE journal SET state = ?2 WHERE id = ?1",
        params![id, state],
    )?;
    Ok(())
}

fn load_terminal(tx: &SqliteTx<'_>, terminal_id: &str) -> Result<Option<TerminalRow>, JobError> {
    Ok(query_row(tx,
            "SELECT merchant_id, status, initial_key_id, last_ksn_counter, max_amount, offline_floor, param_version FROM terminals WHERE terminal_id = ?1",
            params![terminal_id],
            |r| {
                Ok(TerminalRow {
                    merchant_id: r.get(0)?,
                    status: r.get(1)?,
                    initial_key_id: r.get(2)?,
                    last_ksn: r.get(3)?,
                    max_amount: r.get::<_, i64>(4)? as u64,
                    offline_floor: r.get::<_, i64>(5)? as u64,
                    param_version: r.get(6)?,
                })
            },
        )
        .optional()?)
}

fn load_merchant(tx: &SqliteTx<'_>, merchant_id: &str) -> Result<MerchantRow, JobError> {
    Ok(query_row(
        tx,
        "SELECT name, account_id, currency, max_amount, fee_bps FROM merchants WHERE merchant_id = ?1",
        params![merchant_id],
        |r| {
            Ok(MerchantRow {
                name: r.get(0)?,
                account: stored_account(r.get(1)?),
                currency: r.get(2)?,
                max_amount: r.get::<_, i64>(3)? as u64,
                fee_bps: r.get::<_, i64>(4)? as u64,
            })
        },
    )?)
}

fn load_card(tx: &SqliteTx<'_>, token: &str) -> Result<Option<CardRow>, JobError> {
    Ok(query_row(tx,
            "SELECT account_id, expiry, pin_check, status, per_txn_limit, daily_limit, currency FROM cards WHERE token = ?1",
            params![token],
            |r| {
                Ok(CardRow {
                    account: stored_account(r.get(0)?),
                    expiry: Some(r.get(1)?),
                    pin_check: r.get(2)?,
                    status: r.get(3)?,
                    per_txn_limit: r.get::<_, i64>(4)? as u64,
                    daily_limit: r.get::<_, i64>(5)? as u64,
                    currency: r.get(6)?,
                })
            },
        )
        .optional()?)
}

/// Terminal parameters as BER-TLV (field 62 of the sign-on response).
fn parameters(terminal: &TerminalRow, merchant: &MerchantRow, echo_interval: u32) -> Vec<u8> {
    use iso8583::tlv::write;
    let mut out = Vec::new();
    write(
        iso8583::params::MERCHANT_NAME,
        merchant.name.as_bytes(),
        &mut out,
    );
    write(
        iso8583::params::CURRENCY,
        merchant.currency.to_string().as_bytes(),
        &mut out,
    );
    write(
        iso8583::params::MAX_AMOUNT,
        terminal.max_amount.to_string().as_bytes(),
        &mut out,
    );
    write(
        iso8583::params::OFFLINE_FLOOR,
        terminal.offline_floor.to_string().as_bytes(),
        &mut out,
    );
    write(
        iso8583::params::VERSION,
        terminal.param_version.to_string().as_bytes(),
        &mut out,
    );
    write(
        iso8583::params::ECHO_INTERVAL,
        echo_interval.to_string().as_bytes(),
        &mut out,
    );
    write(iso8583::params::METHODS, b"card,qr", &mut out);
    out
}

/// Settlement: the terminal's totals (field 48) against the journal's.
fn settle(tx: &mut SqliteTx<'_>, job: &Job, merchant: &MerchantRow) -> Result<Vec<u8>, JobError> {
    let sent = job.request.get_str(48).unwrap_or("");
    let parse = |r: std::ops::Range<usize>| sent.get(r).and_then(|s| s.parse::<i64>().ok());
    let (Some(debit_amount), Some(debit_count), Some(credit_amount), Some(credit_count)) =
        (parse(0..12), parse(12..15), parse(15..27), parse(27..30))
    else {
        return respond(job, "30", &[], None);
    };
    let totals = |kinds: &str, states: &str| -> Result<(i64, i64), rusqlite::Error> {
        query_row(
            tx,
            &format!(
                "SELECT coalesce(sum(amount), 0), count(*) FROM journal WHERE terminal_id = ?1 AND batch = ?2 AND kind IN ({kinds}) AND state IN ({states})"
            ),
            params![job.terminal_id, job.batch],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    };
    let debits = totals(
        "'sale', 'completion', 'offline_sale'",
        "'approved', 'refunded', 'unfunded'",
    )?;
    let credits = totals("'refund'", "'approved'")?;
    let balanced =
        debits == (debit_amount, debit_count) && credits == (credit_amount, credit_count);
    execute(tx,
        "INSERT INTO settlements (terminal_id, batch, debit_amount, debit_count, credit_amount, credit_count, balanced, closed_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![job.terminal_id, job.batch, debits.0, debits.1, credits.0, credits.1, balanced, balanced.then_some(job.now.unix), job.now.unix],
    )?;
    charge_fee(tx, job, merchant, (debits.0 - credits.0).max(0) as u64)?;
    let answer = format!("{}{}", &sent[..30], if balanced { '1' } else { '2' });
    respond(job, "00", &[(48, answer.into_bytes())], None)
}

/// The merchant's discount on a batch's net sales, moved from the merchant
/// account to the network's fee account. Its transfer id is a function of
/// the terminal and batch, so a repeated settlement charges once.
fn charge_fee(
    tx: &mut SqliteTx<'_>,
    job: &Job,
    merchant: &MerchantRow,
    net: u64,
) -> Result<(), JobError> {
    // u128: amounts up to u64::MAX times 10,000 cannot overflow.
    let fee = (u128::from(net) * u128::from(merchant.fee_bps) / 10_000) as u64;
    if fee == 0 {
        return Ok(());
    }
    let currency = Currency(merchant.currency);
    let fee_account = account_id("fee", &currency.0.to_string());
    ensure_account(tx, fee_account, currency, ledger::AccountKind::Fee)?;
    let merchant_account = merchant.account;
    let id = transfer_id(&job.terminal_id, "fee", 0, job.batch);
    match transfer(
        tx,
        &TransferRequest::single(id, merchant_account, fee_account, fee, currency),
    )? {
        Ok(()) => Ok(()),
        // A settlement repeated after more sales: the first charge stands.
        Err(code) => {
            tracing::warn!(terminal = %job.terminal_id, batch = job.batch, code, "settlement fee not charged again");
            Ok(())
        }
    }
}

/// Writes the journal row and outbox event and returns the response.
fn record(
    tx: &mut SqliteTx<'_>,
    job: &Job,
    merchant_id: &str,
    decision: Decision,
) -> Result<Vec<u8>, JobError> {
    let id: i64 = query_row(
        tx,
        "SELECT coalesce(max(id), 0) + 1 FROM journal",
        [],
        |r| r.get(0),
    )?;
    let rrn = format!("{:012}", id);
    let approved = decision.code == "00";
    let auth = decision.auth.clone().or_else(|| {
        (approved && decision.transfer.is_some())
            .then(|| format!("{:06}", (id * 7919 + 104_729) % 1_000_000))
    });
    let mut extra = decision.extra;
    extra.push((37, rrn.clone().into_bytes()));
    if let Some(a) = &auth {
        extra.push((38, a.clone().into_bytes()));
    }
    let response = respond(job, decision.code, &extra, None)?;
    let card = job.card.as_ref();
    // A follow-up (void, refund, reversal...) pays by its original's method.
    let original: Option<(String, String)> = match decision.original {
        Some(o) => Some(query_row(
            tx,
            "SELECT rrn, method FROM journal WHERE id = ?1",
            params![o],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?),
        None => None,
    };
    let method = match &original {
        Some((_, method)) => method.clone(),
        None => card.map_or("card", CardInput::method).to_string(),
    };
    execute(tx,
        "INSERT INTO journal (id, terminal_id, merchant_id, mti, stan, batch, kind, amount, currency, card_token, masked_pan,
           response_code, auth_code, rrn, transfer_id, original_id, state, request_hash, response, created_at, upstream, method)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
        params![
            id,
            job.terminal_id,
            merchant_id,
            job.request.mti().as_str(),
            job.stan,
            job.batch,
            job.kind.name(),
            job.amount as i64,
            job.currency,
            card.map(|c| &c.token),
            card.map(|c| &c.masked_pan),
            decision.code,
            auth,
            rrn,
            decision.transfer.map(id_bytes),
            decision.original,
            decision.state,
            job.request_hash.to_vec(),
            response,
            job.now.unix,
            decision.upstream,
            method,
        ],
    )?;
    let original_rrn = original.map(|(rrn, _)| rrn);
    let event = serde_json::json!({
        "event_id": format!("txn-{id}"),
        "type": "transaction",
        "transaction": {
            "id": id,
            "kind": job.kind.name(),
            "state": decision.state,
            "approved": approved,
            "response_code": decision.code,
            "amount": job.amount,
            "currency": job.currency,
            "merchant_id": merchant_id,
            "terminal_id": job.terminal_id,
            "stan": job.stan,
            "batch": job.batch,
            "rrn": rrn,
            "auth_code": auth,
            "masked_pan": card.map(|c| &c.masked_pan),
            "payment_method": method,
            "original_rrn": original_rrn,
            "at": job.now.unix,
        }
    });
    execute(
        tx,
        "INSERT INTO outbox (event_id, merchant_id, kind, payload, created_at, next_attempt_at) VALUES (?1, ?2, 'transaction', ?3, ?4, ?4)",
        params![
            format!("txn-{id}"),
            merchant_id,
            event.to_string(),
            job.now.unix
        ],
    )?;
    Ok(response)
}

/// The stored first answer to a retransmitted request, MACed under the
/// retransmission's key (a retry travels under a fresh KSN).
fn remac(job: &Job, stored: &[u8]) -> Result<Vec<u8>, JobError> {
    let Some(key) = &job.response_mac else {
        return Ok(stored.to_vec());
    };
    let mut response = CUP
        .decode(stored)
        .map_err(|e| JobError::Mac(format!("stored response unreadable: {e}")))?;
    response.remove(64);
    mac_encode(&response, key)
}

fn mac_encode(response: &Message, key: &MacKey) -> Result<Vec<u8>, JobError> {
    CUP.try_encode_with_mac(response, |scope| {
        paycrypto::mac::generate(key, paycrypto::mac::Algorithm::Cmac, scope)
            .map(|mac| mac[..8].to_vec())
    })
    .map_err(|e| match e {
        iso8583::MacEncodeError::Encode(e) => JobError::Encode(e),
        iso8583::MacEncodeError::Mac(e) => JobError::Mac(e.to_string()),
    })
}

/// Encodes the response to `job`'s request: the request's echoed fields,
/// time and date, `extra`, the response code, and a MAC when the request had one.
pub fn respond(
    job: &Job,
    code: &str,
    extra: &[(u8, Vec<u8>)],
    mac_override: Option<&MacKey>,
) -> Result<Vec<u8>, JobError> {
    let mti = job.request.mti().response().unwrap_or(job.request.mti());
    let mut response = Message::new(mti);
    for field in [3, 4, 11, 25, 32, 41, 42, 49, 60, 61] {
        if let Some(v) = job.request.get(field) {
            response.set(field, v);
        }
    }
    response
        .set(12, job.now.hhmmss.as_bytes())
        .set(13, job.now.mmdd.as_bytes());
    for (field, value) in extra {
        response.set(*field, value);
    }
    response.set(39, code);
    let key = mac_override.or(job.response_mac.as_ref());
    // An A0 answer is never MACed: the terminal's keys are in doubt.
    match key.filter(|_| code != "A0") {
        Some(key) => mac_encode(&response, key),
        None => Ok(CUP.encode(&response)?),
    }
}

/// The funding account of a currency exists before any card is loaded from it.
pub fn ensure_funding(tx: &mut SqliteTx<'_>, currency: Currency) -> Result<(), JobError> {
    ensure_account(
        tx,
        funding_account(currency),
        currency,
        ledger::AccountKind::Funding,
    )
}

/// Creates one of the network's own accounts (funding, fee, issuer
/// settlement) if it does not exist yet; only a storage failure is an error.
fn ensure_account(
    tx: &mut SqliteTx<'_>,
    id: ledger::AccountId,
    currency: Currency,
    kind: ledger::AccountKind,
) -> Result<(), JobError> {
    match tx.create_account(&ledger::NewAccount::new(id, currency, kind)) {
        Ok(_) => Ok(()),
        Err(ledger::AccountError::Store(e)) => Err(e.into()),
        Err(e) => {
            tracing::error!("{kind:?} account: {e}");
            Ok(())
        }
    }
}

/// The ledger account of merchant `merchant_id`.
pub fn merchant_account(merchant_id: &str) -> ledger::AccountId {
    account_id("merchant", merchant_id)
}

/// The upstream sale a routed journal row names: (route prefix, batch, STAN)
/// of the link's transaction, when the row's state still needs undoing.
pub fn routed_original(
    conn: &rusqlite::Connection,
    terminal: &str,
    mti: &str,
    stan: u32,
    batch: u32,
) -> Result<Option<(String, u32, u32)>, rusqlite::Error> {
    let upstream: Option<Option<String>> = conn
        .query_row(
            "SELECT upstream FROM journal WHERE terminal_id = ?1 AND mti = ?2 AND stan = ?3 AND batch = ?4 AND state = 'approved'",
            params![terminal, mti, stan, batch],
            |r| r.get(0),
        )
        .optional()?;
    Ok(upstream.flatten().and_then(|u| {
        let mut parts = u.splitn(3, ':');
        let (route, b, s) = (
            parts.next()?,
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
        );
        Some((route.to_string(), b, s))
    }))
}

/// Whether a request is already in the journal (a retransmission must not
/// be forwarded upstream again).
pub fn journaled(conn: &rusqlite::Connection, job: &Job) -> Result<bool, rusqlite::Error> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM journal WHERE terminal_id = ?1 AND mti = ?2 AND stan = ?3 AND batch = ?4",
            params![job.terminal_id, job.request.mti().as_str(), job.stan, job.batch],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Whether a request's KSN counter is above the terminal's last (checked
/// again inside the job; this read keeps a replay from reaching an upstream).
pub fn ksn_fresh(conn: &rusqlite::Connection, job: &Job) -> Result<bool, rusqlite::Error> {
    let Some((key_id, counter)) = &job.ksn else {
        return Ok(false);
    };
    Ok(conn
        .query_row(
            "SELECT 1 FROM terminals WHERE terminal_id = ?1 AND initial_key_id = ?2 AND last_ksn_counter < ?3",
            params![job.terminal_id, key_id, counter],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}
