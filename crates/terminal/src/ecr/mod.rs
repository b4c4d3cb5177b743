//! The terminal's ECR interface: cash registers and cashiers' phones drive
//! it in nexo Sale-to-POI, as they drive Adyen's terminals on the local
//! network (docs/ecr-api.md).
//!
//! [`EcrService`] answers one message at a time, bytes in and bytes out,
//! whatever carries them: the HTTPS endpoint ([`server`]) and serial links
//! call [`EcrService::handle`] with each message and send back what it
//! returns; phones follow a payment's progress through
//! [`EcrService::notifications`] (the WebSocket of [`server`]). Keys come
//! from pairings, one nexo key per paired phone or register, kept in the
//! terminal's database with their passphrases sealed ([`store`]).
//! [`protocol`] holds the decisions that need no I/O; [`supervisor`] the
//! second factor that refunds and reversals need; [`tls`] the endpoint's
//! certificate.

pub mod app;
pub mod protocol;
pub mod serial;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod tls;

use crate::card::{Presentation, PresentedCard, TestCard, test_card_named};
use crate::engine::{Method, TxnKind, TxnRequest};
use crate::journal::{JournalError, TxnRecord};
use crate::receipt::{self, EReceipt, ReceiptCopy};
use crate::runtime::Terminal;
use nexo::inbound::{
    InboundError, Refusal, Reply, Security, SecurityFault, check_limit, parse_request,
    parse_response, screen, timestamp,
};
use nexo::message::{RequestBody, ResponseBody, SaleToPoiRequest, SaleToPoiResponse};
use nexo::model::{
    AbortRequest, DiagnosisRequest, DiagnosisResponse, DisplayOutput, DisplayRequest,
    EventNotification, HostStatus, LoginRequest, LoginResponse, LogoutResponse, MessageHeader,
    MessageReference, OutputContent, PaymentRequest, PoiSoftware, PoiStatus, PoiSystemData,
    PoiTerminalData, RepeatedMessageResponse, RepeatedResponseMessageBody, Response,
    ReversalRequest, SaleData, TransactionStatusRequest, TransactionStatusResponse,
    additional_response,
};
use nexo::pairing::Pairing;
use nexo::wire::{
    DeviceType, ErrorCondition, EventToNotify, GlobalStatus, InfoQualify, MessageCategory,
    MessageClass, MessageType, PaymentType, PoiCapability, PrinterStatus, TerminalEnvironment,
};
use paycrypto::nexo::{NexoError, NexoKey};
use protocol::{Acquirer, Verdict};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use store::{PairingInfo, Reservation, Store};
use supervisor::SupervisorError;
use time::OffsetDateTime;
use tokio::sync::{broadcast, oneshot};
use zeroize::Zeroizing;

/// How long a payment waits for a card by default.
pub const DEFAULT_CARD_TIMEOUT: Duration = Duration::from_secs(60);

/// Notifications kept for a subscriber that has not read them; past that
/// the oldest are dropped for it (a slow phone never holds up a payment).
const NOTIFICATION_QUEUE: usize = 64;

/// Longest pairing label, in characters.
const MAX_LABEL: usize = 64;

/// Where the terminal's nexo endpoint is reached, for pairing codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address phones reach.
    pub host: String,
    /// Port.
    pub port: u16,
    /// SHA-256 of the endpoint's certificate (DER).
    pub cert_sha256: [u8; 32],
}

/// How the ECR interface behaves.
#[derive(Debug, Clone)]
pub struct EcrConfig {
    /// How long a payment waits for a card before it fails.
    pub card_timeout: Duration,
    /// A catalog card the simulated reader presents to every payment at
    /// once (unattended demonstrations and tests).
    pub present_card: Option<&'static TestCard>,
    /// The HTTPS endpoint, when there is one (pairing codes name it).
    pub endpoint: Option<Endpoint>,
}

impl Default for EcrConfig {
    fn default() -> Self {
        Self {
            card_timeout: DEFAULT_CARD_TIMEOUT,
            present_card: None,
            endpoint: None,
        }
    }
}

/// What a transport knows of the link a message came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    plain_allowed: bool,
}

impl Link {
    /// Only secured messages are accepted.
    pub fn secured_only() -> Self {
        Self {
            plain_allowed: false,
        }
    }

    /// Plain messages are accepted too (a link protected otherwise: a
    /// cable, the same machine).
    pub fn plain_allowed() -> Self {
        Self {
            plain_allowed: true,
        }
    }

    /// A TCP peer: plain messages only when `allow_plain` is configured
    /// and the peer is on this machine (loopback).
    pub fn tcp(peer: SocketAddr, allow_plain: bool) -> Self {
        Self {
            plain_allowed: allow_plain && peer.ip().to_canonical().is_loopback(),
        }
    }

    /// Whether plain messages are accepted.
    pub fn allows_plain(&self) -> bool {
        self.plain_allowed
    }
}

/// An operation of the ECR interface failed.
#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    /// The terminal's database failed.
    #[error(transparent)]
    Storage(#[from] JournalError),
    /// No pairing with this key identifier and version, or it is revoked.
    #[error("no active pairing with key {key_identifier:?} version {key_version}")]
    UnknownKey {
        /// `KeyIdentifier`.
        key_identifier: String,
        /// `KeyVersion`.
        key_version: u64,
    },
    /// Pairing needs the HTTPS endpoint, which this terminal does not run.
    #[error("the terminal runs no nexo endpoint to pair with")]
    NoEndpoint,
    /// The label is unusable.
    #[error("a pairing label has 1 to {MAX_LABEL} printable characters")]
    Label,
    /// Deriving a key failed.
    #[error("nexo key: {0}")]
    Key(#[from] NexoError),
    /// The supervisor's TOTP secret could not be made.
    #[error("supervisor secret: {0}")]
    Supervisor(#[from] paycrypto::totp::TotpError),
}

/// A card could not be presented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresentError {
    /// Not a card of the catalog.
    #[error("no test card named {0:?}")]
    UnknownCard(String),
    /// Not a wallet payment code.
    #[error("not a payment code: {0}")]
    NotACode(String),
    /// No payment is waiting for a card.
    #[error("no payment is waiting for a card")]
    NobodyWaiting,
}

/// Whether `card` is the card or wallet whose masked number is `expected`.
/// A wallet shows a new payment code each time, so of a code only the
/// part naming the wallet (its first six digits, as masked) must match.
fn same_payer(card: &crate::engine::CardData, expected: &str) -> bool {
    let masked = iso8583::text::mask_pan(&card.pan);
    let expected = receipt::mask(expected);
    if card.entry == crate::engine::Entry::Qr {
        masked.get(..6).is_some() && masked.get(..6) == expected.get(..6)
    } else {
        masked == expected
    }
}

/// The ECR request handler; cheap to clone.
#[derive(Clone)]
pub struct EcrService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EcrService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrService")
            .field("terminal", &self.inner.terminal)
            .finish_non_exhaustive()
    }
}

/// The payment in progress.
struct Running {
    sale_id: String,
    service_id: String,
    /// Aborts it while it waits for the card; `None` once the card is in.
    abort: Option<oneshot::Sender<String>>,
}

struct Inner {
    terminal: Terminal,
    store: Store,
    config: EcrConfig,
    keys: RwLock<HashMap<(String, u64), Arc<NexoKey>>>,
    /// Logged-in Sale systems and their operators.
    sessions: Mutex<BTreeMap<String, Option<String>>>,
    running: Mutex<Option<Running>>,
    /// The payment waiting for a card, if any.
    card: Mutex<Option<oneshot::Sender<Presentation>>>,
    events: broadcast::Sender<Arc<SaleToPoiRequest>>,
}

/// Locks a mutex whose data stays consistent across a panic (each holder
/// replaces a value whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the running slot for one payment; frees it when dropped.
struct RunningGuard<'a> {
    inner: &'a Inner,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.running).take();
    }
}

/// A transaction ran and the journal holds it.
struct Done {
    txn: TxnRecord,
    verdict: Verdict,
    receipts: Vec<EReceipt>,
}

/// A stream of the terminal's notifications (`DisplayRequest`,
/// `EventNotification`) for one subscriber, secured under its pairing's
/// key (or plain, for a link that allows plain messages).
pub struct Notifications {
    rx: broadcast::Receiver<Arc<SaleToPoiRequest>>,
    key: Option<Arc<NexoKey>>,
    service: EcrService,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Notifications {
    /// The next notification's bytes; `None` when the terminal stops or
    /// the subscriber's pairing is revoked. A subscriber that fell more
    /// than 64 notifications behind misses the oldest.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.rx.recv().await {
                Ok(message) => {
                    let key = match &self.key {
                        Some(key) => {
                            let active = self
                                .service
                                .key(key.key_identifier(), key.key_version())
                                .is_some();
                            if !active {
                                return None;
                            }
                            Some(key.as_ref())
                        }
                        None => None,
                    };
                    let reply = Reply::Notification((*message).clone());
                    match reply.encode(key) {
                        Ok(json) => return Some(json.into_bytes()),
                        Err(e) => tracing::error!("notification not secured: {e}"),
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "slow notification subscriber missed notifications");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("operating system random source");
    b
}

impl EcrService {
    /// The ECR interface of `terminal`: opens its tables in the terminal's
    /// data directory, loads the pairings' keys, and answers the exchanges
    /// the terminal stopped in the middle of (from what the journal says
    /// became of their transactions).
    pub async fn new(terminal: Terminal, config: EcrConfig) -> Result<Self, EcrError> {
        let store = Store::open(terminal.data_dir())?;
        let mut keys = HashMap::new();
        for (kid, kv, passphrase) in store.active_keys()? {
            let key = NexoKey::derive(&passphrase, &kid, kv)?;
            keys.insert((kid, kv), Arc::new(key));
        }
        let (events, _) = broadcast::channel(NOTIFICATION_QUEUE);
        let service = Self {
            inner: Arc::new(Inner {
                terminal,
                store,
                config,
                keys: RwLock::new(keys),
                sessions: Mutex::new(BTreeMap::new()),
                running: Mutex::new(None),
                card: Mutex::new(None),
                events,
            }),
        };
        service.recover().await?;
        Ok(service)
    }

    /// The terminal served.
    pub fn terminal(&self) -> &Terminal {
        &self.inner.terminal
    }

    /// The endpoint pairing codes name.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.inner.config.endpoint.as_ref()
    }

    fn poi_id(&self) -> &str {
        self.inner.terminal.terminal_id()
    }

    fn key(&self, key_identifier: &str, key_version: u64) -> Option<Arc<NexoKey>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(key_identifier.to_owned(), key_version))
            .cloned()
    }

    /// Answers one received message (`body`, secured or plain) that came
    /// over `link`: the bytes to send back, secured under the key the
    /// message came with, or plain. Empty for a message nexo answers with
    /// nothing (an abort). Never fails: every problem is a nexo answer.
    ///
    /// The exchange runs on a task of its own, so that a caller that goes
    /// away (a phone whose connection dropped, a server dropping the
    /// request's future) does not stop it half-way: the payment still ends
    /// and its answer is still stored for TransactionStatus.
    pub async fn handle(&self, body: &[u8], link: Link) -> Vec<u8> {
        let this = self.clone();
        let body = body.to_vec();
        match tokio::spawn(async move { this.answer(&body, link).await }).await {
            Ok(reply) => reply,
            // The task panicked (a bug) or the runtime is shutting down:
            // there is no answer to give; the journal holds what happened.
            Err(e) => {
                tracing::error!("nexo exchange ended without an answer: {e}");
                Vec::new()
            }
        }
    }

    async fn answer(&self, body: &[u8], link: Link) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let poi_id = self.poi_id().to_owned();
        // The key is chosen by what the envelope names; the content is
        // acted on only once the key opened it.
        let key = match protocol::envelope(body) {
            Some(envelope) => match envelope.key {
                Some((kid, kv)) => match self.key(&kid, kv) {
                    Some(key) => Some(key),
                    None => {
                        let reason = SecurityFault::Nexo(NexoError::KeyMismatch {
                            found: format!("key {kid:?} version {kv}"),
                            expected: "a key paired with this terminal and not revoked".into(),
                        });
                        return self.rejected(envelope.header, reason, body, now);
                    }
                },
                None if link.allows_plain() => None,
                None => {
                    return self.rejected(envelope.header, SecurityFault::Unsecured, body, now);
                }
            },
            None => None,
        };
        let security = match &key {
            Some(key) => Security::Required(key),
            None => Security::Plain,
        };
        let request = match parse_request(body, security) {
            Ok(inbound) if !inbound.secured && !link.allows_plain() => {
                let header = inbound.message.header;
                return self.rejected(header, SecurityFault::Unsecured, body, now);
            }
            Ok(inbound) => inbound.message,
            Err(e) => {
                tracing::info!(reason = %e, "nexo message refused");
                // A malformed message under a paired key is answered under
                // that key; rejections go plain (the sender may not hold it).
                let key = match e {
                    InboundError::Malformed { .. } => key.as_deref(),
                    _ => None,
                };
                return encode(&e.reply(&poi_id, body, now), key);
            }
        };
        let reply = self.serve(&request, now).await;
        match reply {
            Some(reply) => encode(&reply, key.as_deref()),
            None => Vec::new(),
        }
    }

    fn rejected(
        &self,
        header: MessageHeader,
        reason: SecurityFault,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Vec<u8> {
        let error = InboundError::Security {
            header: Some(Box::new(header)),
            reason,
        };
        tracing::info!(reason = %error, "nexo message rejected");
        encode(&error.reply(self.poi_id(), body, now), None)
    }

    /// Serves a request that passed its security check.
    async fn serve(&self, request: &SaleToPoiRequest, now: OffsetDateTime) -> Option<Reply> {
        let header = &request.header;
        if let Err(refusal) = screen(request) {
            tracing::info!(category = %header.message_category, reason = %refusal, "nexo request refused");
            return Some(refusal.reply(request, now));
        }
        let refuse = |condition, reason: String| {
            tracing::info!(category = %header.message_category, %reason, "nexo request refused");
            Some(Refusal { condition, reason }.reply(request, now))
        };
        if header.poi_id != self.poi_id() {
            return refuse(
                ErrorCondition::NotAllowed,
                format!(
                    "this terminal is POIID {}, not {}",
                    self.poi_id(),
                    header.poi_id
                ),
            );
        }
        let (Some(sale_id), Some(service_id)) = (&header.sale_id, &header.service_id) else {
            return refuse(
                ErrorCondition::MessageFormat,
                "SaleID and ServiceID are required".into(),
            );
        };
        let exchange = match self.inner.store.reserve(
            sale_id,
            service_id,
            header.message_category,
            now.unix_timestamp(),
        ) {
            Ok(Reservation::New(id)) => id,
            Ok(Reservation::Repeated(_)) => {
                return refuse(
                    ErrorCondition::MessageFormat,
                    format!(
                        "repeated ServiceID {service_id}: SaleID {sale_id} used it in the last 48 hours; TransactionStatus repeats its answer"
                    ),
                );
            }
            Err(e) => {
                tracing::error!("ECR store: {e}");
                return refuse(
                    ErrorCondition::UnavailableService,
                    "the terminal's journal failed".into(),
                );
            }
        };
        tracing::info!(sale_id, service_id, category = %header.message_category, "nexo request");
        let reply = self.dispatch(request, exchange, now).await;
        if let Some(Reply::Response(response)) = &reply {
            let r = response.body.response();
            tracing::info!(
                sale_id,
                service_id,
                result = %r.result,
                condition = ?r.error_condition.map(|c| c.as_str()),
                "nexo answer"
            );
        }
        let json = reply.as_ref().map(Reply::to_json);
        // Stored before it is sent: TransactionStatus repeats it, also after
        // a restart.
        if let Err(e) = self
            .inner
            .store
            .answer(exchange, json.as_deref(), now_unix())
        {
            tracing::error!(sale_id, service_id, "ECR answer not stored: {e}");
        }
        reply
    }

    async fn dispatch(
        &self,
        request: &SaleToPoiRequest,
        exchange: i64,
        now: OffsetDateTime,
    ) -> Option<Reply> {
        let header = &request.header;
        let answer = |body| Some(Reply::Response(SaleToPoiResponse::answer(header, body)));
        match &request.body {
            RequestBody::Login(login) => answer(self.login(header, login, now)),
            RequestBody::Logout(_) => {
                if let Some(sale_id) = &header.sale_id {
                    lock(&self.inner.sessions).remove(sale_id);
                }
                answer(ResponseBody::Logout(LogoutResponse {
                    response: Response::success(),
                }))
            }
            RequestBody::Diagnosis(d) => answer(self.diagnosis(d)),
            RequestBody::Payment(p) => Some(self.payment(request, p, exchange, now).await),
            RequestBody::Reversal(r) => Some(self.reversal(request, r, exchange, now).await),
            RequestBody::TransactionStatus(t) => Some(self.transaction_status(request, t, now)),
            RequestBody::Abort(a) => {
                self.abort(header, a);
                None
            }
            // Refused by `screen` before.
            RequestBody::Display(_) | RequestBody::Event(_) | RequestBody::Unsupported { .. } => {
                Some(
                    Refusal {
                        condition: ErrorCondition::NotAllowed,
                        reason: "not served by this terminal".into(),
                    }
                    .reply(request, now),
                )
            }
        }
    }

    fn poi_status(&self) -> PoiStatus {
        let status = self.inner.terminal.status().borrow().clone();
        let busy = lock(&self.inner.running).is_some();
        PoiStatus {
            global_status: if busy {
                GlobalStatus::Busy
            } else {
                GlobalStatus::Ok
            },
            security_ok_flag: Some(status.online),
            ped_ok_flag: Some(true),
            card_reader_ok_flag: Some(true),
            printer_status: Some(PrinterStatus::Ok),
            communication_ok_flag: Some(status.online),
        }
    }

    fn login(
        &self,
        header: &MessageHeader,
        login: &LoginRequest,
        now: OffsetDateTime,
    ) -> ResponseBody {
        if let Some(sale_id) = &header.sale_id {
            lock(&self.inner.sessions).insert(sale_id.clone(), login.operator_id.clone());
        }
        ResponseBody::Login(LoginResponse {
            response: Response::success(),
            poi_system_data: Some(PoiSystemData {
                date_time: timestamp(now),
                poi_software: PoiSoftware {
                    manufacturer_id: "posnet".into(),
                    application_name: "posnet terminal".into(),
                    software_version: env!("CARGO_PKG_VERSION").into(),
                    certification_code: "none".into(),
                },
                poi_terminal_data: Some(PoiTerminalData {
                    terminal_environment: TerminalEnvironment::Attended,
                    poi_capabilities: vec![
                        PoiCapability::CashierDisplay,
                        PoiCapability::CustomerDisplay,
                        PoiCapability::Icc,
                        PoiCapability::EmvContactless,
                        PoiCapability::PrinterReceipt,
                    ],
                    poi_serial_number: self.poi_id().to_owned(),
                }),
                poi_status: Some(self.poi_status()),
            }),
        })
    }

    fn diagnosis(&self, request: &DiagnosisRequest) -> ResponseBody {
        let status = self.inner.terminal.status().borrow().clone();
        // The host in use is reachable; when offline every host was tried
        // and failed; others are not tried while one works.
        let host_status = self
            .inner
            .terminal
            .hosts()
            .iter()
            .filter(|h| request.acquirer_id.is_empty() || request.acquirer_id.contains(h))
            .map(|h| HostStatus {
                acquirer_id: h.clone(),
                is_reachable_flag: if !status.online {
                    Some(false)
                } else if status.host.as_deref() == Some(h.as_str()) {
                    Some(true)
                } else {
                    None
                },
            })
            .collect();
        let signed_on = status.online.to_string();
        let pending = status.pending_saf.to_string();
        ResponseBody::Diagnosis(DiagnosisResponse {
            response: Response {
                additional_response: Some(additional_response(&[
                    ("signedOn", &signed_on),
                    ("pendingAdvices", &pending),
                ])),
                ..Response::success()
            },
            logged_sale_id: lock(&self.inner.sessions).keys().cloned().collect(),
            poi_status: Some(self.poi_status()),
            host_status,
        })
    }

    fn acquirer(&self) -> Acquirer {
        Acquirer {
            host: self.inner.terminal.status().borrow().host.clone(),
            merchant_id: self.inner.terminal.merchant_id().to_owned(),
            terminal_id: self.inner.terminal.terminal_id().to_owned(),
        }
    }

    /// Takes the running slot, or says the terminal is busy.
    fn start(
        &self,
        header: &MessageHeader,
    ) -> Result<(RunningGuard<'_>, oneshot::Receiver<String>), String> {
        let mut running = lock(&self.inner.running);
        if let Some(r) = running.as_ref() {
            return Err(format!(
                "the terminal is busy with ServiceID {} of SaleID {}",
                r.service_id, r.sale_id
            ));
        }
        let (tx, rx) = oneshot::channel();
        *running = Some(Running {
            sale_id: header.sale_id.clone().unwrap_or_default(),
            service_id: header.service_id.clone().unwrap_or_default(),
            abort: Some(tx),
        });
        Ok((RunningGuard { inner: &self.inner }, rx))
    }

    /// Checks the supervisor's code of a refund or reversal.
    fn supervise(&self, sale_data: Option<&SaleData>) -> Result<(), SupervisorError> {
        let store = &self.inner.store;
        let secret = store
            .supervisor()
            .map_err(|e| {
                tracing::error!("supervisor secret: {e}");
                SupervisorError::NotConfigured
            })?
            .ok_or(SupervisorError::NotConfigured)?;
        let code =
            Zeroizing::new(protocol::supervisor_code(sale_data).ok_or(SupervisorError::Missing)?);
        let unix = u64::try_from(now_unix()).unwrap_or(0);
        let last = store.supervisor_last_step().ok().flatten();
        let step = supervisor::verify(secret.expose(), self.poi_id(), &code, unix, last)?;
        if let Err(e) = store.set_supervisor_last_step(step) {
            tracing::error!("supervisor code not recorded as used: {e}");
            return Err(SupervisorError::NotConfigured);
        }
        Ok(())
    }

    fn payment_failure(
        request: &SaleToPoiRequest,
        condition: ErrorCondition,
        reason: String,
        now: OffsetDateTime,
    ) -> Reply {
        tracing::info!(%reason, condition = condition.as_str(), "nexo payment failed");
        Refusal { condition, reason }.reply(request, now)
    }

    async fn payment(
        &self,
        request: &SaleToPoiRequest,
        payment: &PaymentRequest,
        exchange: i64,
        now: OffsetDateTime,
    ) -> Reply {
        let fail =
            |condition, reason: String| Self::payment_failure(request, condition, reason, now);
        let Some(params) = self.inner.terminal.params().await else {
            return fail(
                ErrorCondition::UnavailableService,
                "the terminal has not signed on yet and knows no limits".into(),
            );
        };
        let (currency, _) = receipt::currency_code(params.currency);
        let asked = &payment.payment_transaction.amounts_req.currency;
        if *asked != currency {
            return fail(
                ErrorCondition::NotAllowed,
                format!("this terminal takes {currency}, not {asked}"),
            );
        }
        let amount = match check_limit(payment, params.max_amount) {
            Ok(amount) => amount,
            Err(refusal) => return fail(refusal.condition, refusal.reason),
        };
        if amount == 0 {
            return fail(
                ErrorCondition::Refusal,
                "the amount must be more than zero".into(),
            );
        }
        let payment_type = payment.payment_type();
        let (kind, original) = match payment_type {
            PaymentType::Refund => {
                match protocol::original_id(
                    payment
                        .payment_transaction
                        .original_poi_transaction
                        .as_ref(),
                ) {
                    Ok(id) => (TxnKind::Refund, Some(id)),
                    Err(reason) => {
                        return fail(
                            ErrorCondition::MessageFormat,
                            format!("a refund names the payment it refunds: {reason}"),
                        );
                    }
                }
            }
            _ => (TxnKind::Sale, None),
        };
        let (_guard, abort) = match self.start(&request.header) {
            Ok(started) => started,
            Err(reason) => return fail(ErrorCondition::Busy, reason),
        };
        if kind == TxnKind::Refund
            && let Err(e) = self.supervise(Some(&payment.sale_data))
        {
            return fail(ErrorCondition::Refusal, e.to_string());
        }
        let txn = TxnRequest {
            kind,
            amount,
            method: Method::Card,
            original: original.map(|o| (o.batch, o.stan)),
        };
        match self
            .run_with_card(&request.header, txn, params.currency, None, abort, exchange)
            .await
        {
            Ok(done) => Reply::Response(SaleToPoiResponse::answer(
                &request.header,
                ResponseBody::Payment(protocol::payment_response(
                    payment_type,
                    Some(&payment.sale_data),
                    &done.txn,
                    &done.verdict,
                    &self.acquirer(),
                    &done.receipts,
                )),
            )),
            Err((condition, reason)) => fail(condition, reason),
        }
    }

    async fn reversal(
        &self,
        request: &SaleToPoiRequest,
        reversal: &ReversalRequest,
        exchange: i64,
        now: OffsetDateTime,
    ) -> Reply {
        let fail =
            |condition, reason: String| Self::payment_failure(request, condition, reason, now);
        let id = match protocol::original_id(Some(&reversal.original_poi_transaction)) {
            Ok(id) => id,
            Err(reason) => return fail(ErrorCondition::MessageFormat, reason),
        };
        let original = match self
            .inner
            .terminal
            .find_transaction(id.batch, id.stan)
            .await
        {
            Ok(Some(original)) => original,
            Ok(None) => {
                return fail(
                    ErrorCondition::NotFound,
                    format!("no payment {id} at this terminal"),
                );
            }
            Err(e) => return fail(ErrorCondition::UnavailableService, format!("journal: {e}")),
        };
        if original.kind != TxnKind::Sale.name() || original.state != "approved" {
            return fail(
                ErrorCondition::NotAllowed,
                format!(
                    "{id} is a {} that is {}: only approved sales of the open batch are reversed",
                    original.kind, original.state
                ),
            );
        }
        let (currency, _) = receipt::currency_code(original.currency);
        if let Some(asked) = reversal.reversed_amount
            && asked.to_minor(&currency).ok() != Some(original.amount)
        {
            return fail(
                ErrorCondition::NotAllowed,
                format!(
                    "ReversedAmount {asked} is not the payment's amount: partial reversals are not supported"
                ),
            );
        }
        let (_guard, abort) = match self.start(&request.header) {
            Ok(started) => started,
            Err(reason) => return fail(ErrorCondition::Busy, reason),
        };
        if let Err(e) = self.supervise(reversal.sale_data.as_ref()) {
            return fail(ErrorCondition::Refusal, e.to_string());
        }
        let txn = TxnRequest {
            kind: TxnKind::Void,
            amount: original.amount,
            method: Method::Card,
            original: Some((id.batch, id.stan)),
        };
        match self
            .run_with_card(
                &request.header,
                txn,
                original.currency,
                Some(&original.masked_pan),
                abort,
                exchange,
            )
            .await
        {
            Ok(done) => Reply::Response(SaleToPoiResponse::answer(
                &request.header,
                ResponseBody::Reversal(protocol::reversal_response(
                    &reversal.original_poi_transaction,
                    &done.txn,
                    &done.verdict,
                    &done.receipts,
                )),
            )),
            Err((condition, reason)) => fail(condition, reason),
        }
    }

    /// Waits for a card (at most the card timeout, or until aborted), then
    /// runs the transaction. `card_of` is the masked card number the card
    /// must have (a reversal reads the card that paid).
    async fn run_with_card(
        &self,
        header: &MessageHeader,
        req: TxnRequest,
        currency: u16,
        card_of: Option<&str>,
        abort: oneshot::Receiver<String>,
        exchange: i64,
    ) -> Result<Done, (ErrorCondition, String)> {
        let (code, amount) = receipt::money(req.amount, currency);
        // The reader waits before the display asks for the card.
        let (tx, presented) = oneshot::channel();
        *lock(&self.inner.card) = Some(tx);
        self.show(
            header,
            &["Present card".to_owned(), format!("{code} {amount}")],
        );
        let card = match self.wait_for_card(presented, abort).await {
            Ok(card) => card,
            Err((condition, reason)) => {
                let text = if condition == ErrorCondition::Aborted {
                    self.event(header, EventToNotify::Abort, &reason);
                    "Aborted"
                } else {
                    "No card"
                };
                self.show(header, &[text.to_owned()]);
                return Err((condition, reason));
            }
        };
        if let Some(running) = lock(&self.inner.running).as_mut() {
            // The card is in: the transaction goes to its end.
            running.abort = None;
        }
        let presented = card.present();
        if let (Some(expected), Ok(p)) = (card_of, &presented)
            && !same_payer(&p.card, expected)
        {
            self.show(header, &["Wrong card".to_owned()]);
            return Err((
                ErrorCondition::InvalidCard,
                "the card presented is not the card that paid".into(),
            ));
        }
        let pin = presented
            .as_ref()
            .is_ok_and(|p: &PresentedCard| p.pin.is_some());
        let step = if pin { "pinEntry" } else { "processing" };
        self.event(header, EventToNotify::CardInserted, step);
        if pin {
            self.show(header, &["Enter PIN".to_owned()]);
        }
        self.show(header, &["Processing".to_owned()]);
        let terminal = &self.inner.terminal;
        let journal_failed = |e: JournalError| {
            tracing::error!("journal: {e}");
            (
                ErrorCondition::UnavailableService,
                "the terminal's journal failed".to_owned(),
            )
        };
        let result = terminal
            .transact_for_exchange(req, presented, exchange)
            .await
            .map_err(journal_failed)?;
        let txn = terminal
            .transaction(result.id)
            .await
            .map_err(journal_failed)?
            .map(|(txn, _)| txn)
            .ok_or_else(|| journal_failed(JournalError::Io("transaction vanished".into())))?;
        let receipts = self.receipts(txn.id).await.map_err(journal_failed)?;
        self.show(header, &[receipt::result_text(&txn)]);
        Ok(Done {
            verdict: Verdict::of(&result.outcome),
            txn,
            receipts,
        })
    }

    async fn receipts(&self, id: i64) -> Result<Vec<EReceipt>, JournalError> {
        let mut receipts = Vec::new();
        for copy in [ReceiptCopy::Merchant, ReceiptCopy::Customer] {
            if let Some(r) = self.inner.terminal.receipt(id, copy).await? {
                receipts.push(r.electronic().clone());
            }
        }
        Ok(receipts)
    }

    async fn wait_for_card(
        &self,
        presented: oneshot::Receiver<Presentation>,
        abort: oneshot::Receiver<String>,
    ) -> Result<Presentation, (ErrorCondition, String)> {
        if let Some(card) = self.inner.config.present_card {
            lock(&self.inner.card).take();
            return Ok(Presentation::Card(card));
        }
        let timeout = self.inner.config.card_timeout;
        let result = tokio::select! {
            card = presented => card.map_err(|_| (ErrorCondition::Cancel, "the card reader went away".to_owned())),
            Ok(reason) = abort => Err((ErrorCondition::Aborted, format!("aborted by the Sale system ({reason})"))),
            _ = tokio::time::sleep(timeout) => Err((
                ErrorCondition::Cancel,
                format!("no card presented within {} s", timeout.as_secs()),
            )),
        };
        lock(&self.inner.card).take();
        result
    }

    /// Presents catalog card `name` to the payment waiting for a card.
    pub fn present_card(&self, name: &str) -> Result<(), PresentError> {
        let card =
            test_card_named(name).ok_or_else(|| PresentError::UnknownCard(name.to_owned()))?;
        self.present(Presentation::Card(card))
    }

    /// Scans wallet payment code `code` for the payment waiting for a card.
    pub fn present_code(&self, code: &str) -> Result<(), PresentError> {
        paycrypto::paycode::PaymentCode::parse(code.trim())
            .map_err(|e| PresentError::NotACode(e.to_string()))?;
        self.present(Presentation::Code(code.trim().to_owned()))
    }

    fn present(&self, presentation: Presentation) -> Result<(), PresentError> {
        let waiting = lock(&self.inner.card)
            .take()
            .ok_or(PresentError::NobodyWaiting)?;
        waiting
            .send(presentation)
            .map_err(|_| PresentError::NobodyWaiting)
    }

    fn abort(&self, header: &MessageHeader, abort: &AbortRequest) {
        let reference = &abort.message_reference;
        let sale_id = reference.sale_id.as_ref().or(header.sale_id.as_ref());
        let mut running = lock(&self.inner.running);
        let target = running.as_mut().filter(|r| {
            Some(&r.sale_id) == sale_id && Some(&r.service_id) == reference.service_id.as_ref()
        });
        match target.and_then(|r| r.abort.take()) {
            Some(tx) => {
                let _ = tx.send(abort.abort_reason.clone());
                tracing::info!(service_id = ?reference.service_id, reason = %abort.abort_reason, "payment aborted");
            }
            None => tracing::info!(
                service_id = ?reference.service_id,
                "abort: no payment of that ServiceID waits for a card"
            ),
        }
    }

    fn transaction_status(
        &self,
        request: &SaleToPoiRequest,
        status: &TransactionStatusRequest,
        now: OffsetDateTime,
    ) -> Reply {
        let header = &request.header;
        let fail = |condition, reason: String| Refusal { condition, reason }.reply(request, now);
        let reference = status.message_reference.clone().unwrap_or_default();
        let reported = [MessageCategory::Payment, MessageCategory::Reversal];
        if reference
            .message_category
            .is_some_and(|c| !reported.contains(&c))
        {
            return fail(
                ErrorCondition::NotAllowed,
                "TransactionStatus reports on payments and reversals".into(),
            );
        }
        let Some(sale_id) = reference.sale_id.as_ref().or(header.sale_id.as_ref()) else {
            return fail(ErrorCondition::MessageFormat, "no SaleID".into());
        };
        let unix = now.unix_timestamp();
        let found = match &reference.service_id {
            Some(service_id) => self.inner.store.exchange(sale_id, service_id, unix),
            None => self.inner.store.last_payment(sale_id, unix),
        };
        let exchange = match found {
            Ok(Some(e)) => e,
            Ok(None) => {
                let reason = match &reference.service_id {
                    Some(id) => format!("no transaction with ServiceID {id}"),
                    None => format!("no payment of SaleID {sale_id} in the last 48 hours"),
                };
                return fail(ErrorCondition::NotFound, reason);
            }
            Err(e) => {
                tracing::error!("ECR store: {e}");
                return fail(
                    ErrorCondition::UnavailableService,
                    "the terminal's journal failed".into(),
                );
            }
        };
        if !reported.iter().any(|c| c.as_str() == exchange.category) {
            return fail(
                ErrorCondition::NotAllowed,
                format!(
                    "ServiceID {} is a {}: TransactionStatus reports on payments and reversals",
                    exchange.service_id, exchange.category
                ),
            );
        }
        let Some(answer) = exchange.answer.filter(|_| exchange.answered) else {
            let waiting = lock(&self.inner.card).is_some();
            let reason = if waiting {
                "the payment is waiting for the card"
            } else {
                "the payment is in progress"
            };
            return fail(ErrorCondition::InProgress, reason.into());
        };
        let original = match parse_response(answer.as_bytes(), Security::Plain) {
            Ok(inbound) => inbound.message,
            Err(e) => {
                tracing::error!(service_id = %exchange.service_id, "stored answer unreadable: {e}");
                return fail(
                    ErrorCondition::UnavailableService,
                    "the stored answer is unreadable".into(),
                );
            }
        };
        let mut body = RepeatedResponseMessageBody::default();
        match original.body {
            ResponseBody::Payment(mut p) => {
                protocol::reprint(
                    &mut p.payment_receipt,
                    status.receipt_reprint_flag,
                    &status.document_qualifier,
                );
                body.payment_response = Some(p);
            }
            ResponseBody::Reversal(mut r) => {
                protocol::reprint(
                    &mut r.payment_receipt,
                    status.receipt_reprint_flag,
                    &status.document_qualifier,
                );
                body.reversal_response = Some(r);
            }
            _ => {
                return fail(
                    ErrorCondition::NotFound,
                    "the stored answer is no payment's".into(),
                );
            }
        }
        let category = original.header.message_category;
        Reply::Response(SaleToPoiResponse::answer(
            header,
            ResponseBody::TransactionStatus(TransactionStatusResponse {
                response: Response::success(),
                message_reference: Some(MessageReference {
                    message_category: Some(category),
                    service_id: Some(exchange.service_id),
                    device_id: None,
                    sale_id: Some(exchange.sale_id),
                    poi_id: None,
                }),
                repeated_message_response: Some(Box::new(RepeatedMessageResponse {
                    message_header: original.header,
                    repeated_response_message_body: body,
                })),
            }),
        ))
    }

    /// Answers the exchanges left without an answer when the terminal
    /// stopped, from what the journal says of their transactions.
    async fn recover(&self) -> Result<(), EcrError> {
        for exchange in self.inner.store.unanswered()? {
            let category = MessageCategory::from_wire(&exchange.category);
            let header = MessageHeader {
                protocol_version: Some("3.0".into()),
                message_class: MessageClass::Service,
                message_category: category.unwrap_or(MessageCategory::Payment),
                message_type: MessageType::Request,
                service_id: Some(exchange.service_id.clone()),
                device_id: None,
                sale_id: Some(exchange.sale_id.clone()),
                poi_id: self.poi_id().to_owned(),
            };
            let txn = self
                .inner
                .terminal
                .transaction_for_exchange(exchange.id)
                .await?;
            let body = match (category, txn) {
                (Some(MessageCategory::Abort), _) => None,
                (Some(MessageCategory::Payment), Some(txn)) => {
                    let payment_type = if txn.kind == TxnKind::Refund.name() {
                        PaymentType::Refund
                    } else {
                        PaymentType::Normal
                    };
                    Some(ResponseBody::Payment(protocol::payment_response(
                        payment_type,
                        None,
                        &txn,
                        &Verdict::of_record(&txn),
                        &self.acquirer(),
                        &self.receipts(txn.id).await?,
                    )))
                }
                (Some(MessageCategory::Reversal), Some(txn)) => {
                    let original = nexo::model::OriginalPoiTransaction {
                        sale_id: None,
                        poi_id: None,
                        poi_transaction_id: None,
                        approval_code: None,
                    };
                    Some(ResponseBody::Reversal(protocol::reversal_response(
                        &original,
                        &txn,
                        &Verdict::of_record(&txn),
                        &self.receipts(txn.id).await?,
                    )))
                }
                _ => SaleToPoiResponse::failure(
                    &header,
                    ErrorCondition::Aborted,
                    "the terminal stopped before it went to the host; nothing was charged",
                )
                .map(|r| r.body),
            };
            let json = body
                .map(|body| Reply::Response(SaleToPoiResponse::answer(&header, body)).to_json());
            tracing::info!(
                sale_id = %exchange.sale_id,
                service_id = %exchange.service_id,
                "answered an exchange the terminal stopped in"
            );
            self.inner
                .store
                .answer(exchange.id, json.as_deref(), now_unix())?;
        }
        Ok(())
    }

    fn publish(&self, header: &MessageHeader, class: MessageClass, body: RequestBody) {
        let message = SaleToPoiRequest {
            header: MessageHeader {
                protocol_version: Some("3.0".into()),
                message_class: class,
                message_category: body.category(),
                message_type: if class == MessageClass::Event {
                    MessageType::Notification
                } else {
                    MessageType::Request
                },
                service_id: header.service_id.clone(),
                device_id: None,
                sale_id: header.sale_id.clone(),
                poi_id: self.poi_id().to_owned(),
            },
            body,
        };
        // No subscriber is no error: the notification is for whoever listens.
        let _ = self.inner.events.send(Arc::new(message));
    }

    /// Shows `lines` on the terminal and pushes them to subscribers as a
    /// `DisplayRequest`.
    fn show(&self, header: &MessageHeader, lines: &[String]) {
        self.inner.terminal.display(&lines.join(" "));
        let output = DisplayOutput {
            device: DeviceType::CashierDisplay,
            info_qualify: InfoQualify::Status,
            response_required_flag: Some(false),
            minimum_display_time: None,
            output_content: OutputContent::text(lines.iter().cloned()),
        };
        self.publish(
            header,
            MessageClass::Device,
            RequestBody::Display(DisplayRequest {
                display_output: vec![output],
            }),
        );
    }

    /// Pushes an `EventNotification` with `EventDetails` `step=<step>` or
    /// `message=<step>`.
    fn event(&self, header: &MessageHeader, event: EventToNotify, detail: &str) {
        let key = if event == EventToNotify::CardInserted {
            "step"
        } else {
            "message"
        };
        self.publish(
            header,
            MessageClass::Event,
            RequestBody::Event(EventNotification {
                time_stamp: timestamp(OffsetDateTime::now_utc()),
                event_to_notify: event,
                event_details: Some(additional_response(&[(key, detail)])),
                rejected_message: None,
                maintenance_required_flag: None,
                display_output: None,
            }),
        );
    }

    /// The notifications for the pairing with `key_identifier` and
    /// `key_version`, secured under its key; refused for a key that is not
    /// paired or is revoked. The stream ends when the pairing is revoked.
    pub fn notifications(
        &self,
        key_identifier: &str,
        key_version: u64,
    ) -> Result<Notifications, EcrError> {
        let key = self
            .key(key_identifier, key_version)
            .ok_or_else(|| EcrError::UnknownKey {
                key_identifier: key_identifier.to_owned(),
                key_version,
            })?;
        Ok(Notifications {
            rx: self.inner.events.subscribe(),
            key: Some(key),
            service: self.clone(),
        })
    }

    /// The notifications in plain JSON, for a link that allows plain
    /// messages ([`Link::allows_plain`]).
    pub fn plain_notifications(&self) -> Notifications {
        Notifications {
            rx: self.inner.events.subscribe(),
            key: None,
            service: self.clone(),
        }
    }

    /// Pairs a phone or cash register: a fresh key identifier and random
    /// passphrase (its key, version 1), stored sealed; the code carries
    /// them with the endpoint's address and certificate fingerprint.
    pub fn pair(&self, label: &str) -> Result<Pairing, EcrError> {
        let label = label.trim();
        if label.is_empty()
            || label.chars().count() > MAX_LABEL
            || label.chars().any(char::is_control)
        {
            return Err(EcrError::Label);
        }
        let endpoint = self
            .inner
            .config
            .endpoint
            .clone()
            .ok_or(EcrError::NoEndpoint)?;
        let key_identifier = format!("posnet-{}", hex::encode(random_bytes::<6>()));
        let key_version = 1;
        let passphrase =
            Zeroizing::new(data_encoding::BASE64URL_NOPAD.encode(&random_bytes::<24>()));
        let key = NexoKey::derive(&passphrase, &key_identifier, key_version)?;
        self.inner.store.add_pairing(
            &key_identifier,
            key_version,
            &passphrase,
            label,
            now_unix(),
        )?;
        self.inner
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((key_identifier.clone(), key_version), Arc::new(key));
        tracing::info!(key_identifier, label, "paired");
        Ok(Pairing {
            host: endpoint.host,
            port: endpoint.port,
            cert_sha256: endpoint.cert_sha256,
            poi_id: self.poi_id().to_owned(),
            key_identifier,
            key_version,
            passphrase,
        })
    }

    /// Every pairing, newest first.
    pub fn pairings(&self) -> Result<Vec<PairingInfo>, EcrError> {
        Ok(self.inner.store.pairings()?)
    }

    /// Revokes the pairing(s) with `key_identifier`; from now on messages
    /// under its key are rejected and its subscribers cut off. Returns how
    /// many key versions were revoked.
    pub fn revoke(&self, key_identifier: &str) -> Result<usize, EcrError> {
        let revoked = self.inner.store.revoke(key_identifier, now_unix())?;
        self.inner
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(kid, _), _| kid != key_identifier);
        tracing::info!(key_identifier, revoked, "pairing revoked");
        Ok(revoked)
    }

    /// Sets a fresh supervisor TOTP secret (replacing any earlier one) and
    /// returns its `otpauth://` URI, to show once: it is the secret.
    pub fn set_supervisor(&self) -> Result<Zeroizing<String>, EcrError> {
        let totp = paycrypto::totp::Totp::generate(supervisor::ISSUER, self.poi_id())?;
        self.inner.store.set_supervisor(totp.secret())?;
        tracing::info!("supervisor secret replaced");
        Ok(totp.otpauth_uri())
    }
}

/// The bytes of `reply`, secured with `key` when given.
fn encode(reply: &Reply, key: Option<&NexoKey>) -> Vec<u8> {
    match reply.encode(key) {
        Ok(json) => json.into_bytes(),
        Err(e) => {
            // Securing fails only for a plaintext over the size limit,
            // which no answer of the terminal reaches.
            tracing::error!("answer not secured: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_payer;
    use crate::engine::{CardData, Entry};

    fn read(pan: &str, entry: Entry) -> CardData {
        CardData {
            pan: pan.into(),
            expiry: String::new(),
            entry,
            offline_allowed: false,
        }
    }

    #[test]
    fn a_wallet_is_the_same_payer_whatever_code_it_shows() {
        // Two codes of wallet 100000001, then one of wallet 200000001.
        let paid = "691000*********1234";
        assert!(same_payer(&read("6910000000198765432", Entry::Qr), paid));
        assert!(!same_payer(&read("6920000000198765432", Entry::Qr), paid));
        // A card must be the very card.
        let card = "620000******0005";
        assert!(same_payer(&read("6200000000000005", Entry::Chip), card));
        assert!(!same_payer(&read("6200000000000013", Entry::Chip), card));
        assert!(!same_payer(&read("6910000000198765432", Entry::Chip), paid));
    }
}
