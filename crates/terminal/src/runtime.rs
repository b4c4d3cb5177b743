//! The terminal at work: keeps a link to its hosts (failover, sign-on, echo,
//! reconnect with backoff and jitter), runs each transaction through the
//! engine, persists every reversal before the request it protects leaves,
//! and forwards stored reversals and advices before any new financial message.

use crate::card::{CardReader, PresentedCard, pin_block};
use crate::engine::{
    self, Entry, Exchange, Method, Outcome, Params, Refusal, Reply, ReversalAction, Route, SafAck,
    SafKind, Totals, TxnKind, TxnRequest, saf_ack,
};
use crate::journal::{Journal, JournalError, TxnRecord};
use crate::link::{Link, LinkError};
use crate::receipt::{Merchant, Receipt, ReceiptCopy};
use iso8583::dialect::CUP;
use iso8583::message_set::TxnType;
use iso8583::text::mask_pan;
use iso8583::{Field60, Message, Mti};
use paycrypto::dukpt::aes::{MacDirection, Terminal as Dukpt, mac_key, pin_key};
use paycrypto::{Kbpk, KeyAlgorithm, MacKey};
use pki::EnrollmentBundle;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

/// How the terminal runs.
#[derive(Debug, Clone)]
pub struct TerminalOptions {
    /// Journal directory.
    pub data_dir: PathBuf,
    /// Wait for an answer this long before reversing.
    pub response_timeout: Duration,
    /// Give up connecting to one host after this long.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl Default for TerminalOptions {
    fn default() -> Self {
        TerminalOptions {
            data_dir: PathBuf::from("posnet-data/terminal"),
            response_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Starting the terminal failed.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The bundle's keys or certificate are unusable.
    #[error("enrollment bundle: {0}")]
    Bundle(String),
}

/// What the terminal shows and reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Connected and signed on.
    pub online: bool,
    /// The host it is connected to.
    pub host: Option<String>,
    /// Stored reversals and advices awaiting the host.
    pub pending_saf: usize,
    /// What the screen shows.
    pub display: String,
    /// The merchant's name from the host's parameters.
    pub merchant_name: Option<String>,
    /// The terminal's ISO 4217 numeric currency from the parameters.
    pub currency: Option<u16>,
}

/// The result of a transaction, for the cashier, the phone and receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Journal row.
    pub id: i64,
    /// How it ended.
    pub outcome: Outcome,
    /// STAN.
    pub stan: u32,
    /// Batch.
    pub batch: u32,
}

/// The result of settlement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Settlement {
    /// The batch settled.
    pub batch: u32,
    /// The terminal's totals.
    pub debit_amount: u64,
    /// Count of debits.
    pub debit_count: u32,
    /// Credits.
    pub credit_amount: u64,
    /// Count of credits.
    pub credit_count: u32,
    /// Whether the host's totals matched at once.
    pub balanced: bool,
    /// Transactions uploaded when not balanced.
    pub uploaded: usize,
}

struct State {
    journal: Journal,
    dukpt: Dukpt,
    params: Option<Params>,
    link: Option<Arc<Link>>,
    last_activity: Instant,
}

/// A running terminal.
#[derive(Clone)]
pub struct Terminal {
    inner: Arc<Inner>,
}

struct Inner {
    bundle: EnrollmentBundle,
    tls: Arc<rustls::ClientConfig>,
    options: TerminalOptions,
    state: Mutex<State>,
    status: watch::Sender<Status>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("terminal_id", &self.inner.bundle.terminal_id)
            .finish_non_exhaustive()
    }
}

fn today_yymm() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:02}{:02}", now.year() % 100, u8::from(now.month()))
}

/// A secured request ready to send, with the key its answer is checked under.
struct Sealed {
    wire: Vec<u8>,
    response_mti: [u8; 4],
    stan: u32,
    verify: Option<MacKey>,
}

impl Terminal {
    /// Opens the journal and loads the keys of `bundle`; the initial key is
    /// unwrapped from its TR-31 block with `transport_key`.
    pub fn open(
        bundle: EnrollmentBundle,
        transport_key: &[u8],
        options: TerminalOptions,
    ) -> Result<Self, TerminalError> {
        let bad = |e: &dyn std::fmt::Display| TerminalError::Bundle(e.to_string());
        let tls = pki::tls::client_config(
            &bundle.ca_cert_pem,
            &bundle.cert_pem,
            bundle.key_pem.as_bytes(),
        )
        .map_err(|e| bad(&e))?;
        let kbpk = Kbpk::new(KeyAlgorithm::Aes256, transport_key).map_err(|e| bad(&e))?;
        let ik = paycrypto::tr31::unwrap(&kbpk, &bundle.initial_key_block)
            .and_then(|b| b.initial_key())
            .map_err(|e| bad(&e))?;
        let ikid: [u8; 8] = hex::decode(&bundle.initial_key_id)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad(&"initial key id"))?;
        let journal = Journal::open(&options.data_dir)?;
        let dukpt = Dukpt::resume(ik, ikid, journal.ksn_next()?).map_err(|e| bad(&e))?;
        let params = journal
            .setting("params")?
            .and_then(|hex_tlv| hex::decode(hex_tlv).ok())
            .and_then(|tlv| Params::from_tlv(&tlv).ok());
        let pending_saf = journal.saf_items()?.len();
        let (status, _) = watch::channel(Status {
            online: false,
            host: None,
            pending_saf,
            display: "Offline".into(),
            merchant_name: params.as_ref().map(|p| p.merchant_name.clone()),
            currency: params.as_ref().map(|p| p.currency),
        });
        let state = State {
            journal,
            dukpt,
            params,
            link: None,
            last_activity: Instant::now(),
        };
        Ok(Terminal {
            inner: Arc::new(Inner {
                bundle,
                tls,
                options,
                state: Mutex::new(state),
                status,
            }),
        })
    }

    /// The terminal id.
    pub fn terminal_id(&self) -> &str {
        &self.inner.bundle.terminal_id
    }

    /// The merchant id.
    pub fn merchant_id(&self) -> &str {
        &self.inner.bundle.merchant_id
    }

    /// The host addresses of the bundle, in failover order.
    pub fn hosts(&self) -> &[String] {
        &self.inner.bundle.hosts
    }

    /// The directory of the journal (and of the terminal's other files).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.options.data_dir
    }

    /// Watches the terminal's status.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    /// The current parameters, once signed on (or remembered from before).
    pub async fn params(&self) -> Option<Params> {
        self.inner.state.lock().await.params.clone()
    }

    /// Shows `text` on the terminal's display (the screen page and the
    /// status follow it).
    pub fn display(&self, text: &str) {
        self.inner
            .status
            .send_modify(|s| s.display = text.to_string());
    }

    fn publish(&self, state: &State) {
        let online = state.link.as_ref().is_some_and(|l| !l.is_closed());
        let host = state.link.as_ref().map(|l| l.address.clone());
        let pending = state.journal.saf_items().map(|i| i.len()).unwrap_or(0);
        let params = state.params.as_ref();
        let merchant_name = params.map(|p| p.merchant_name.clone());
        let currency = params.map(|p| p.currency);
        self.inner.status.send_modify(|s| {
            s.online = online;
            s.host = host;
            s.pending_saf = pending;
            s.merchant_name = merchant_name;
            s.currency = currency;
        });
    }

    /// Keeps the link up: connects with failover and backoff, signs on,
    /// forwards stored messages and sends echoes when idle, until `stop` is true.
    pub async fn supervise(&self, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.inner.options.backoff_min;
        loop {
            let connected = {
                let mut state = self.inner.state.lock().await;
                let ok = self.ensure_link(&mut state).await.is_ok();
                if ok {
                    self.forward_saf(&mut state).await;
                    self.echo_if_idle(&mut state).await;
                }
                self.publish(&state);
                ok
            };
            let wait = if connected {
                backoff = self.inner.options.backoff_min;
                Duration::from_millis(250)
            } else {
                let jittered = jitter(backoff);
                backoff = (backoff * 2).min(self.inner.options.backoff_max);
                jittered
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if let Some(link) = self.inner.state.lock().await.link.take() {
            link.close();
        }
    }

    async fn ensure_link(&self, state: &mut State) -> Result<(), LinkError> {
        if state.link.as_ref().is_some_and(|l| !l.is_closed()) {
            return Ok(());
        }
        state.link = None;
        let mut last = LinkError::Unreachable("no host address in the bundle".into());
        for address in &self.inner.bundle.hosts {
            match Link::connect(
                address,
                self.inner.tls.clone(),
                self.inner.options.connect_timeout,
            )
            .await
            {
                Ok(link) => {
                    state.link = Some(Arc::new(link));
                    match self.sign_on(state).await {
                        Ok(()) => {
                            tracing::info!(terminal = self.terminal_id(), host = %address, "online");
                            self.display("Ready");
                            return Ok(());
                        }
                        Err(e) => {
                            last = e;
                            if let Some(l) = state.link.take() {
                                l.close();
                            }
                        }
                    }
                }
                Err(e) => last = e,
            }
        }
        self.display("Offline");
        Err(last)
    }

    async fn sign_on(&self, state: &mut State) -> Result<(), LinkError> {
        let request = self
            .request_message(state, "0800", None, 0, Some(3))
            .map_err(|e| LinkError::Unreachable(e.to_string()))?;
        let reply = self.send(state, request, None, false).await?;
        match reply {
            Reply::Valid(msg) if msg.response_code() == Some("00") => {
                if let Some(tlv) = msg.get(62) {
                    match Params::from_tlv(tlv) {
                        Ok(params) => {
                            let _ = state.journal.set_setting("params", &hex::encode(tlv));
                            state.params = Some(params);
                        }
                        Err(e) => tracing::warn!("sign-on parameters unusable: {e}"),
                    }
                }
                Ok(())
            }
            Reply::Valid(msg) => Err(LinkError::Unreachable(format!(
                "sign-on refused with {}",
                msg.response_code().unwrap_or("?")
            ))),
            Reply::Invalid(why) => Err(LinkError::Unreachable(format!(
                "sign-on answer unusable: {why}"
            ))),
        }
    }

    async fn echo_if_idle(&self, state: &mut State) {
        let interval = state
            .params
            .as_ref()
            .map(|p| p.echo_interval_secs)
            .unwrap_or(60)
            .max(1);
        if state.last_activity.elapsed() < Duration::from_secs(u64::from(interval)) {
            return;
        }
        let Ok(request) = self.request_message(state, "0820", None, 0, Some(301)) else {
            return;
        };
        if self.send(state, request, None, false).await.is_err() {
            tracing::warn!(
                terminal = self.terminal_id(),
                "echo unanswered; reconnecting"
            );
            if let Some(link) = state.link.take() {
                link.close();
            }
        }
    }

    /// A request with 11, 41, 42 and 60 filled in.
    fn request_message(
        &self,
        state: &State,
        mti: &str,
        txn_type: Option<u8>,
        batch_override: u32,
        network: Option<u16>,
    ) -> Result<Message, JournalError> {
        let mut m = Message::new(Mti::new(mti).expect("static MTI"));
        let stan = state.journal.next_stan()?;
        m.set_stan(stan).expect("STAN under 1,000,000");
        m.set(41, &self.inner.bundle.terminal_id)
            .set(42, &self.inner.bundle.merchant_id);
        let batch = if batch_override > 0 {
            batch_override
        } else {
            state.journal.batch()?
        };
        let f60 = Field60 {
            transaction_type: txn_type.unwrap_or(0),
            batch,
            network_code: Some(network.unwrap_or(0)),
            rest: String::new(),
        };
        m.set(60, f60.to_text().expect("valid subfields"));
        Ok(m)
    }

    /// Secures `request` (KSN, MAC, PIN block when `pin` is given) and sends it.
    async fn send(
        &self,
        state: &mut State,
        request: Message,
        pin: Option<&PresentedCard>,
        mac: bool,
    ) -> Result<Reply, LinkError> {
        let sealed = self
            .seal(state, request, pin, mac)
            .map_err(|e| LinkError::Unreachable(e.to_string()))?;
        self.send_sealed(state, sealed).await
    }

    fn seal(
        &self,
        state: &mut State,
        mut request: Message,
        card: Option<&PresentedCard>,
        mac: bool,
    ) -> Result<Sealed, String> {
        let stan = request
            .stan()
            .and_then(Result::ok)
            .ok_or("request without STAN")?;
        let response_mti = request.mti().response().ok_or("not a request")?.digits();
        if !mac {
            return Ok(Sealed {
                wire: CUP.encode(&request).map_err(|e| e.to_string())?,
                response_mti,
                stan,
                verify: None,
            });
        }
        let (ksn, tk) = state.dukpt.next_transaction().map_err(|e| e.to_string())?;
        // The counter is stored before the key is used: never two messages under one key.
        state
            .journal
            .set_ksn_next(ksn.counter() + 1)
            .map_err(|e| e.to_string())?;
        let generate = mac_key(&tk, &ksn, MacDirection::Generate, KeyAlgorithm::Aes128)
            .map_err(|e| e.to_string())?;
        let verify = mac_key(&tk, &ksn, MacDirection::Verify, KeyAlgorithm::Aes128)
            .map_err(|e| e.to_string())?;
        if let Some(PresentedCard {
            card,
            pin: Some(pin),
        }) = card
        {
            let key = pin_key(&tk, &ksn, KeyAlgorithm::Aes128).map_err(|e| e.to_string())?;
            request.set(
                52,
                pin_block(pin, &card.pan, &key).map_err(|e| e.to_string())?,
            );
            request.set(26, "12").set(53, "4700000000000000");
        }
        request.set(62, ksn.as_bytes());
        // A MAC that cannot be computed stops the request: never a zero MAC.
        let wire = CUP
            .try_encode_with_mac(&request, |scope| {
                paycrypto::mac::generate(&generate, paycrypto::mac::Algorithm::Cmac, scope)
                    .map(|m| m[..8].to_vec())
            })
            .map_err(|e| e.to_string())?;
        Ok(Sealed {
            wire,
            response_mti,
            stan,
            verify: Some(verify),
        })
    }

    async fn send_sealed(&self, state: &mut State, sealed: Sealed) -> Result<Reply, LinkError> {
        let link = state.link.clone().ok_or(LinkError::Lost)?;
        let result = link
            .exchange(
                sealed.wire,
                sealed.response_mti,
                sealed.stan,
                self.inner.options.response_timeout,
            )
            .await;
        state.last_activity = Instant::now();
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(e) => {
                // Unknown host state: start from a fresh connection.
                link.close();
                state.link = None;
                return Err(e);
            }
        };
        Ok(verify_reply(&bytes, sealed.verify.as_ref()))
    }

    /// Sends stored reversals, then advices, oldest first, each until the
    /// host acknowledges it. Stops at the first that cannot be delivered.
    async fn forward_saf(&self, state: &mut State) -> bool {
        for _ in 0..10_000 {
            let items = match state.journal.saf_items() {
                Ok(items) => items,
                Err(_) => return false,
            };
            let Some(item) = engine::next_saf(&items).cloned() else {
                return true;
            };
            let Ok(Some((_txn, message))) = state.journal.saf_message(item.id) else {
                return false;
            };
            let Ok(request) = CUP.decode(&message) else {
                tracing::error!(
                    id = item.id,
                    "stored message unreadable; kept for inspection"
                );
                return false;
            };
            let reply = match self.send(state, request, None, true).await {
                Ok(reply) => reply,
                Err(e) => {
                    let _ = state.journal.saf_attempt_failed(item.id, &e.to_string());
                    return false;
                }
            };
            match saf_ack(&reply) {
                SafAck::Done => {
                    let code = match &reply {
                        Reply::Valid(m) => m.response_code().unwrap_or("").to_string(),
                        Reply::Invalid(_) => String::new(),
                    };
                    let what = if item.kind == SafKind::Reversal {
                        "reversal"
                    } else {
                        "advice"
                    };
                    let _ = state
                        .journal
                        .saf_done(item.id, &format!("{what} acknowledged with {code}"));
                }
                SafAck::Retry => {
                    let _ = state
                        .journal
                        .saf_attempt_failed(item.id, "no usable answer");
                    return false;
                }
                SafAck::SignOnThenRetry => {
                    let _ = state
                        .journal
                        .saf_attempt_failed(item.id, "A0: signing on again");
                    if self.sign_on(state).await.is_err() {
                        return false;
                    }
                }
            }
        }
        false
    }

    /// Runs one transaction with a card from `reader`: shows "Present card"
    /// while the reader waits, "Enter PIN" when the card asks for one, then
    /// runs it as [`Terminal::transact`]. The read runs on the caller's task.
    pub async fn transact_with_reader(
        &self,
        req: TxnRequest,
        reader: &mut dyn CardReader,
    ) -> Result<TxnResult, JournalError> {
        self.display("Present card");
        let presented = reader.read(req.amount);
        if presented.as_ref().is_ok_and(|p| p.pin.is_some()) {
            self.display("Enter PIN");
        }
        self.transact(req, presented).await
    }

    /// Runs one transaction to a definite end.
    pub async fn transact(
        &self,
        req: TxnRequest,
        presented: Result<PresentedCard, crate::card::CardError>,
    ) -> Result<TxnResult, JournalError> {
        self.run(req, presented, None).await
    }

    /// Runs one transaction to a definite end as the answer to ECR
    /// exchange `exchange`: the journal records the link in the same
    /// commit that records the transaction, so that after a crash the
    /// exchange is answered with what became of it.
    pub async fn transact_for_exchange(
        &self,
        req: TxnRequest,
        presented: Result<PresentedCard, crate::card::CardError>,
        exchange: i64,
    ) -> Result<TxnResult, JournalError> {
        self.run(req, presented, Some(exchange)).await
    }

    async fn run(
        &self,
        req: TxnRequest,
        presented: Result<PresentedCard, crate::card::CardError>,
        ecr: Option<i64>,
    ) -> Result<TxnResult, JournalError> {
        let mut state = self.inner.state.lock().await;
        // Reversals and advices go first; if they cannot, the host is down.
        let mut online =
            self.ensure_link(&mut state).await.is_ok() && self.forward_saf(&mut state).await;
        let Some(params) = state.params.clone() else {
            return self.refuse(&mut state, &req, "", Refusal::NotSignedOn, ecr);
        };
        let presented = match presented {
            Ok(p) => p,
            Err(e) => {
                return self.refuse(
                    &mut state,
                    &req,
                    "",
                    Refusal::CardUnreadable(e.to_string()),
                    ecr,
                );
            }
        };
        let masked = mask_pan(&presented.card.pan);
        let offline_pending = state.journal.offline_pending()?;
        if online && state.link.is_none() {
            online = false;
        }
        let route = match engine::route(
            &params,
            &req,
            &presented.card,
            online,
            offline_pending,
            &today_yymm(),
        ) {
            Ok(route) => route,
            Err(refusal) => return self.refuse(&mut state, &req, &masked, refusal, ecr),
        };
        let codes = match route {
            Route::Online => req.kind.txn_type(),
            Route::Offline => TxnType::OfflineSale,
        }
        .codes();
        let (mti, pc, cond, txn_type) = (
            codes.mti,
            codes.processing_code,
            codes.condition_code,
            codes.type_code,
        );
        let mut request = self.request_message(&state, mti, Some(txn_type), 0, None)?;
        let stan = request.stan().and_then(Result::ok).unwrap_or(0);
        let batch = state.journal.batch()?;
        request
            .set(2, &presented.card.pan)
            .set(3, pc)
            .set(22, presented.card.entry.pos_entry_mode())
            .set(25, cond);
        if presented.card.entry != Entry::Qr {
            request.set(14, &presented.card.expiry);
        }
        request.set(49, format!("{:03}", params.currency));
        if req.kind != TxnKind::Balance {
            request
                .set_amount(req.amount)
                .expect("amount under the limit fits 12 digits");
        }
        if let Some((ob, os)) = req.original {
            request.set(61, format!("{ob:06}{os:06}"));
        }
        if route == Route::Offline {
            let advice = CUP
                .encode(&request)
                .map_err(|e| JournalError::Io(e.to_string()))?;
            let id = state.journal.begin(
                req.kind,
                req.amount,
                params.currency,
                &masked,
                stan,
                batch,
                req.original,
                "approved_offline",
                Some((SafKind::Advice, &advice)),
                ecr,
            )?;
            state.journal.finish(
                id,
                "approved_offline",
                None,
                "approved offline under the floor limit",
                None,
                None,
                false,
            )?;
            self.display("Approved offline");
            self.publish(&state);
            return Ok(TxnResult {
                id,
                outcome: Outcome::ApprovedOffline,
                stan,
                batch,
            });
        }
        // Persist the reversal before the request leaves.
        let reversal = if req.kind.reversible() {
            let mut r = request.clone();
            r.set_mti(Mti::new("0400").expect("static MTI"));
            r.set(39, "98");
            Some(
                CUP.encode(&r)
                    .map_err(|e| JournalError::Io(e.to_string()))?,
            )
        } else {
            None
        };
        let id = state.journal.begin(
            req.kind,
            req.amount,
            params.currency,
            &masked,
            stan,
            batch,
            req.original,
            "sending",
            reversal.as_deref().map(|r| (SafKind::Reversal, r)),
            ecr,
        )?;
        if presented.pin.is_some() {
            // The host verifies the PIN block it receives: an approval of this
            // transaction is PIN-verified, and its receipt needs no signature.
            state.journal.record_online_pin(id)?;
        }
        self.display(if presented.pin.is_some() {
            "PIN entered, processing"
        } else {
            "Processing"
        });
        // The link enforces the response timeout; the engine decides what it means.
        let mut exchange = Exchange::new(0, self.inner.options.response_timeout.as_millis() as u64);
        let step = match self.send(&mut state, request, Some(&presented), true).await {
            Ok(reply) => exchange.on_reply(reply),
            Err(LinkError::Timeout) => exchange.on_tick(exchange.deadline_ms()),
            Err(_) => exchange.on_link_lost(),
        }
        .expect("a fresh exchange ends once");
        let (code, auth, rrn) = match &step.outcome {
            Outcome::Approved { auth_code, rrn } => (
                Some("00".to_string()),
                Some(auth_code.clone()),
                Some(rrn.clone()),
            ),
            Outcome::Declined { code, .. } => (Some(code.clone()), None, None),
            _ => (None, None, None),
        };
        let reason = match &step.outcome {
            Outcome::Approved { .. } => "approved".to_string(),
            Outcome::Declined { reason, .. } => reason.to_string(),
            Outcome::Reversed { why } => why.clone(),
            other => other.state().to_string(),
        };
        let drop_reversal = step.reversal == ReversalAction::Discard;
        state.journal.finish(
            id,
            step.outcome.state(),
            code.as_deref(),
            &reason,
            auth.as_deref(),
            rrn.as_deref(),
            drop_reversal,
        )?;
        if matches!(step.outcome, Outcome::Approved { .. })
            && let (TxnKind::Void | TxnKind::PreAuthCancel, Some((ob, os))) =
                (req.kind, req.original)
        {
            state.journal.mark_original(ob, os, "voided")?;
        }
        if step.sign_on {
            let _ = self.sign_on(&mut state).await;
        }
        self.display(match &step.outcome {
            Outcome::Approved { .. } => "Approved",
            Outcome::Declined { .. } => "Declined",
            _ => "Reversed",
        });
        if step.reversal == ReversalAction::Keep && state.link.is_some() {
            // Deliver the reversal now if the host is still there.
            self.forward_saf(&mut state).await;
        }
        self.publish(&state);
        Ok(TxnResult {
            id,
            outcome: step.outcome,
            stan,
            batch,
        })
    }

    fn refuse(
        &self,
        state: &mut State,
        req: &TxnRequest,
        masked: &str,
        refusal: Refusal,
        ecr: Option<i64>,
    ) -> Result<TxnResult, JournalError> {
        let stan = state.journal.next_stan()?;
        let batch = state.journal.batch()?;
        let currency = state.params.as_ref().map(|p| p.currency).unwrap_or(0);
        let id = state.journal.begin(
            req.kind,
            req.amount,
            currency,
            masked,
            stan,
            batch,
            req.original,
            "failed",
            None,
            ecr,
        )?;
        state
            .journal
            .finish(id, "failed", None, &refusal.to_string(), None, None, false)?;
        self.display(&format!("Refused: {refusal}"));
        Ok(TxnResult {
            id,
            outcome: Outcome::FailedBeforeSending(refusal),
            stan,
            batch,
        })
    }

    /// Settles the open batch: totals in a 0500; when the host's differ,
    /// uploads each transaction (0320) and ends the upload; then closes the batch.
    pub async fn settle(&self) -> Result<Settlement, String> {
        let mut state = self.inner.state.lock().await;
        self.ensure_link(&mut state)
            .await
            .map_err(|e| e.to_string())?;
        if !self.forward_saf(&mut state).await {
            return Err(
                "stored reversals or advices could not be delivered; settle when the host has them"
                    .into(),
            );
        }
        let batch = state.journal.batch().map_err(|e| e.to_string())?;
        let totals: Totals = state.journal.totals(batch).map_err(|e| e.to_string())?;
        let currency = state.params.as_ref().map(|p| p.currency).unwrap_or(0);
        let mut request = self
            .request_message(&state, "0500", None, 0, Some(201))
            .map_err(|e| e.to_string())?;
        request
            .set(48, totals.field48())
            .set(49, format!("{currency:03}"));
        let balanced = match self
            .send(&mut state, request, None, true)
            .await
            .map_err(|e| e.to_string())?
        {
            Reply::Valid(reply) => {
                engine::settlement_balanced(&reply).ok_or("settlement answer without a result")?
            }
            Reply::Invalid(why) => return Err(format!("settlement answer unusable: {why}")),
        };
        let mut uploaded = 0;
        if !balanced {
            for txn in state
                .journal
                .batch_transactions(batch)
                .map_err(|e| e.to_string())?
            {
                let mut m = self
                    .request_message(&state, "0320", None, 0, Some(201))
                    .map_err(|e| e.to_string())?;
                m.set(4, format!("{:012}", txn.amount))
                    .set(49, format!("{:03}", txn.currency));
                m.set(61, format!("{:06}{:06}", txn.batch, txn.stan));
                m.set(63, format!("{}:{}", txn.kind, txn.masked_pan));
                match self
                    .send(&mut state, m, None, true)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Reply::Valid(r) if r.response_code() == Some("00") => uploaded += 1,
                    _ => {
                        return Err(format!(
                            "batch upload of STAN {} not acknowledged",
                            txn.stan
                        ));
                    }
                }
            }
            let end = self
                .request_message(&state, "0320", None, 0, Some(202))
                .map_err(|e| e.to_string())?;
            let mut end = end;
            end.set(49, format!("{currency:03}"));
            self.send(&mut state, end, None, true)
                .await
                .map_err(|e| e.to_string())?;
        }
        state.journal.close_batch().map_err(|e| e.to_string())?;
        Ok(Settlement {
            batch,
            debit_amount: totals.debit_amount,
            debit_count: totals.debit_count,
            credit_amount: totals.credit_amount,
            credit_count: totals.credit_count,
            balanced,
            uploaded,
        })
    }

    /// Recent transactions, newest first.
    pub async fn history(&self, limit: u32) -> Result<Vec<TxnRecord>, JournalError> {
        self.inner.state.lock().await.journal.recent(limit)
    }

    /// The transaction with trace number `stan` in batch `batch`.
    pub async fn find_transaction(
        &self,
        batch: u32,
        stan: u32,
    ) -> Result<Option<TxnRecord>, JournalError> {
        self.inner.state.lock().await.journal.find(batch, stan)
    }

    /// The transaction that answers ECR exchange `exchange`, if one began.
    pub async fn transaction_for_exchange(
        &self,
        exchange: i64,
    ) -> Result<Option<TxnRecord>, JournalError> {
        self.inner.state.lock().await.journal.for_exchange(exchange)
    }

    /// One transaction with its state history.
    pub async fn transaction(
        &self,
        id: i64,
    ) -> Result<Option<(TxnRecord, Vec<(String, String, i64)>)>, JournalError> {
        let state = self.inner.state.lock().await;
        Ok(match state.journal.get(id)? {
            Some(t) => Some((t, state.journal.history(id)?)),
            None => None,
        })
    }

    /// The `copy` receipt of transaction `id`, with the merchant's name from
    /// the host's parameters (the merchant id until the first sign-on).
    pub async fn receipt(
        &self,
        id: i64,
        copy: ReceiptCopy,
    ) -> Result<Option<Receipt>, JournalError> {
        let state = self.inner.state.lock().await;
        let Some(txn) = state.journal.get(id)? else {
            return Ok(None);
        };
        let pin_verified = txn.online_pin;
        let merchant = Merchant {
            name: state
                .params
                .as_ref()
                .map(|p| p.merchant_name.clone())
                .unwrap_or_else(|| self.inner.bundle.merchant_id.clone()),
            merchant_id: self.inner.bundle.merchant_id.clone(),
            terminal_id: self.inner.bundle.terminal_id.clone(),
        };
        Ok(Some(Receipt::new(&merchant, &txn, pin_verified, copy)))
    }

    /// Whether `method` is enabled by the current parameters.
    pub async fn accepts(&self, method: Method) -> bool {
        self.params()
            .await
            .is_some_and(|p| p.methods.contains(&method))
    }
}

/// Decodes an answer and checks its MAC; an A0 comes without one.
fn verify_reply(bytes: &[u8], key: Option<&MacKey>) -> Reply {
    let (msg, scope) = match CUP.decode_with_mac_scope(bytes) {
        Ok(decoded) => decoded,
        Err(e) => return Reply::Invalid(e.to_string()),
    };
    let Some(key) = key else {
        return Reply::Valid(msg);
    };
    if msg.response_code() == Some("A0") && !msg.has(64) {
        return Reply::Valid(msg);
    }
    match (scope, msg.get(64)) {
        (Some(scope), Some(mac))
            if paycrypto::mac::verify(key, paycrypto::mac::Algorithm::Cmac, scope, mac).is_ok() =>
        {
            Reply::Valid(msg)
        }
        (_, None) => Reply::Invalid(format!(
            "answer {} without a MAC",
            msg.response_code().unwrap_or("?")
        )),
        _ => Reply::Invalid("answer MAC does not verify".into()),
    }
}

/// `base` scaled by a random factor in [0.5, 1.5): terminals that lost the
/// same host do not all come back at the same instant.
fn jitter(base: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let factor = 0.5 + f64::from(u16::from_le_bytes(b)) / 65_536.0;
    base.mul_f64(factor)
}
