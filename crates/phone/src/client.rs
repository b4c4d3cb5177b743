//! The phone as a nexo Sale system: builds each request (its `SaleID`, a
//! fresh `ServiceID`, the pairing's `POIID`), secures it with the
//! pairing's key, sends it with retries while nothing was delivered,
//! checks that the answer is the request's, and when the answer is lost
//! or is not the request's, learns the outcome with `TransactionStatus`
//! instead of sending a payment twice. Every exchange is in the phone's
//! history before it leaves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nexo::inbound::{Security, parse_request, parse_response};
use nexo::message::{RequestBody, ResponseBody, SaleToPoiRequest, SaleToPoiResponse, ToJson};
use nexo::model::{
    AmountsReq, DiagnosisRequest, DiagnosisResponse, LoginRequest, LogoutRequest, MessageHeader,
    MessageReference, OriginalPoiTransaction, PaymentData, PaymentRequest, PaymentTransaction,
    ReversalRequest, SaleData, SaleSoftware, SaleTerminalData, TransactionIdentification,
    TransactionStatusRequest, TransactionStatusResponse, additional_response,
};
use nexo::pairing::Pairing;
use nexo::wire::{
    DocumentQualifier, EventToNotify, MessageCategory, MessageClass, MessageType, PaymentType,
    ResultType, ReversalReason, SaleCapability, TerminalEnvironment,
};
use paycrypto::nexo::{NexoError, NexoKey};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::check::{self, Mismatch};
use crate::explain;
use crate::history::{Finish, History, HistoryError, Kind, NewExchange, Record, State};
use crate::money::{Money, MoneyError};
use crate::recovery::{self, Observation, Recovery, Step};
use crate::retry::Backoff;
use crate::store::{PairingStore, StoreError};
use crate::transport::{Https, Serial, Timeouts, Transport, TransportError};

/// How the phone runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The phone's data directory (pairings, history).
    pub data_dir: PathBuf,
    /// The terminal to use (`POIID`); the default pairing when `None`.
    pub terminal: Option<String>,
    /// Connection and answer timeouts.
    pub timeouts: Timeouts,
    /// Tries to reach the terminal before giving up.
    pub connect: Backoff,
    /// Status requests when an answer is lost.
    pub status: Backoff,
    /// Follow the terminal's progress (its notification WebSocket).
    pub progress: bool,
    /// A serial device to reach the terminal through instead of HTTPS
    /// (`/dev/ttyUSB0`, `/dev/rfcomm0`), and its baud rate.
    pub serial: Option<(String, u32)>,
}

impl Options {
    /// The defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            terminal: None,
            timeouts: Timeouts::default(),
            connect: Backoff::CONNECT,
            status: Backoff::STATUS,
            progress: true,
            serial: None,
        }
    }
}

/// A request could not be carried out; the message says what failed and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    /// The pairings could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The history could not be read or written.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The pairing's key could not be derived.
    #[error("the pairing's nexo key: {0}")]
    Key(#[from] NexoError),
    /// The amount typed is unusable.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// The supervisor code is not six digits.
    #[error("the supervisor code must be the 6 digits the supervisor's authenticator shows")]
    SupervisorCode,
    /// A refund names a terminal transaction this phone has no record of
    /// and no time stamp was given.
    #[error(
        "terminal transaction {0:?} is not in this phone's history: give its time stamp with --original-time (as on the receipt or in the terminal's journal)"
    )]
    UnknownOriginal(String),
    /// Nothing reached the terminal.
    #[error("{last} (gave up after {attempts} attempt(s))")]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: TransportError,
    },
    /// The terminal rejected the message without acting on it, for its
    /// security (a key it does not accept).
    #[error(
        "key rejected by the terminal: {details} — the terminal no longer accepts this phone's key (it was re-keyed or paired anew): pair again with the code the terminal shows"
    )]
    KeyRejected {
        /// The terminal's words.
        details: String,
    },
    /// The terminal rejected the message without acting on it, as
    /// unreadable.
    #[error(
        "the terminal rejected the message unread: {details} — the phone and the terminal may run different versions"
    )]
    Rejected {
        /// The terminal's words.
        details: String,
    },
    /// An answer that could be resent for was still unusable.
    #[error("the terminal's answer is unusable: {0} (run `posnet phone diagnose`)")]
    BadAnswer(String),
    /// The terminal never received the payment or reversal: nothing
    /// happened.
    #[error(
        "the terminal never received {what} {service_id} ({lost}): no money moved — you may start it again"
    )]
    NotReceived {
        /// `payment`, `refund`, `reversal`.
        what: &'static str,
        /// Its `ServiceID`.
        service_id: String,
        /// How its answer was lost.
        lost: String,
    },
    /// The outcome could not be learnt.
    #[error(
        "the outcome of {what} {service_id} is unknown: its answer was lost ({lost}) and asking the terminal failed: {why} — do not take the payment again: check the terminal's screen or journal, or run `posnet phone status {service_id}` later"
    )]
    Unknown {
        /// `payment`, `refund`, `reversal`.
        what: &'static str,
        /// Its `ServiceID`.
        service_id: String,
        /// How its answer was lost.
        lost: String,
        /// Why asking failed.
        why: String,
    },
}

impl PhoneError {
    /// Where an exchange that failed so stands.
    fn state(&self) -> State {
        match self {
            Self::NotReceived { .. } => State::NotReceived,
            Self::Unknown { .. } | Self::BadAnswer(_) => State::Unknown,
            // Nothing was sent, or the terminal did not act on it.
            _ => State::NotSent,
        }
    }
}

/// Something the cashier may want to see while a request runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The terminal's progress (a display or event notification).
    Progress(String),
    /// The terminal could not be reached; trying again after `pause`.
    Retry {
        /// The attempt about to be made.
        attempt: u32,
        /// The pause before it.
        pause: Duration,
        /// What failed.
        reason: String,
    },
    /// The answer was lost or is not the request's: asking the terminal.
    AnswerLost {
        /// What happened.
        reason: String,
    },
    /// A status request is about to be sent.
    Asking {
        /// Its number.
        attempt: u32,
        /// The pause before it.
        pause: Duration,
    },
}

/// A six-digit supervisor code (TOTP), for refunds and reversals. Not
/// shown by `Debug`.
#[derive(Clone)]
pub struct SupervisorCode(Zeroizing<String>);

impl SupervisorCode {
    /// Checks that `code` is six digits.
    pub fn new(code: &str) -> Result<Self, PhoneError> {
        if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(Zeroizing::new(code.to_owned())))
        } else {
            Err(PhoneError::SupervisorCode)
        }
    }

    /// `SaleToAcquirerData`: `supervisorCode=NNNNNN`.
    fn sale_to_acquirer_data(&self) -> String {
        additional_response(&[("supervisorCode", &self.0)])
    }
}

impl std::fmt::Debug for SupervisorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SupervisorCode(<redacted>)")
    }
}

/// The answer to a request, direct or recovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The request's `ServiceID`.
    pub service_id: String,
    /// The terminal's answer.
    pub response: SaleToPoiResponse,
    /// Why the answer had to be asked for with `TransactionStatus`, when
    /// it had.
    pub recovered: Option<String>,
}

impl Outcome {
    /// Whether the terminal did what was asked.
    pub fn succeeded(&self) -> bool {
        self.response.body.response().result == ResultType::Success
    }

    /// The terminal's outcome in a line (`Success`, `Refusal: insufficient funds`).
    pub fn reason(&self) -> String {
        explain::reason(self.response.body.response())
    }
}

impl Outcome {
    /// What a cashier or a script needs of the outcome.
    pub fn summary(&self) -> Summary {
        Summary::of(
            &self.service_id,
            &self.response.body,
            self.recovered.clone(),
        )
    }
}

/// An answer as the phone shows it (and `--json` prints it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// `ServiceID` of the request answered.
    pub service_id: String,
    /// `MessageCategory` (`Payment`, `Reversal`, ...).
    pub category: String,
    /// `Result`.
    pub result: String,
    /// `ErrorCondition` of a failure.
    pub error_condition: Option<String>,
    /// The terminal's outcome in a line.
    pub reason: String,
    /// What to do about a failure.
    pub advice: Option<String>,
    /// Amount authorized or reversed (`12.50 EUR`).
    pub amount: Option<String>,
    /// `POITransactionID`.
    pub poi_transaction_id: Option<String>,
    /// Its time stamp.
    pub poi_transaction_time: Option<String>,
    /// `ApprovalCode`.
    pub approval_code: Option<String>,
    /// `MaskedPan` (first six and last four digits at most).
    pub masked_pan: Option<String>,
    /// The customer's receipt, line by line.
    pub receipt: Vec<String>,
    /// Why the answer was asked for with `TransactionStatus`, if it was.
    pub recovered: Option<String>,
}

impl Summary {
    /// The summary of answer `body` to exchange `service_id`.
    pub fn of(service_id: &str, body: &ResponseBody, recovered: Option<String>) -> Self {
        let response = body.response();
        let finish = finish_of(body);
        let (amount, receipts) = match body {
            ResponseBody::Payment(p) => (
                p.payment_result
                    .as_ref()
                    .and_then(|r| r.amounts_resp.as_ref())
                    .and_then(|a| {
                        let currency = a.currency.as_deref()?;
                        let minor = a.authorized_amount.to_minor(currency).ok()?;
                        Money::from_minor(minor, currency).ok()
                    }),
                p.payment_receipt.as_slice(),
            ),
            ResponseBody::Reversal(r) => (None, r.payment_receipt.as_slice()),
            _ => (None, &[][..]),
        };
        let amount = amount.map(|m| m.to_string()).or_else(|| match body {
            ResponseBody::Reversal(r) => r.reversed_amount.map(|a| a.to_string()),
            _ => None,
        });
        Self {
            service_id: service_id.to_owned(),
            category: body.category().to_string(),
            result: response.result.to_string(),
            error_condition: response.error_condition.map(|c| c.to_string()),
            reason: explain::reason(response),
            advice: response
                .error_condition
                .filter(|_| response.result != ResultType::Success)
                .map(|c| explain::advice(c).to_owned()),
            amount,
            poi_transaction_id: finish.poi_transaction.as_ref().map(|t| t.0.clone()),
            poi_transaction_time: finish.poi_transaction.map(|t| t.1),
            approval_code: finish.approval_code,
            masked_pan: finish.masked_pan.as_deref().map(iso8583::text::mask_pan),
            receipt: explain::receipt(receipts, DocumentQualifier::CustomerReceipt),
            recovered,
        }
    }
}

/// Now as nexo writes time stamps (RFC 3339, UTC, milliseconds).
pub fn timestamp_now() -> String {
    stamp(now())
}

/// Now, to the millisecond (as nexo time stamps are written).
fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond())
        .expect("a millisecond of an existing time is valid")
}

fn stamp(at: OffsetDateTime) -> String {
    nexo::inbound::timestamp(at)
}

/// How an answer read.
enum Read {
    /// The request's answer.
    Answer(Box<SaleToPoiResponse>),
    /// A `Reject` notification: not acted on.
    Rejected { details: String, security: bool },
    /// Not the request's answer, or unreadable.
    Unusable(String),
}

/// How a delivery ended.
enum Delivered {
    Answer(Box<SaleToPoiResponse>),
    /// Delivered maybe; the answer is lost or unusable.
    Lost(String),
}

/// The phone, paired with one terminal.
pub struct Phone {
    history: History,
    pairing: Pairing,
    key: NexoKey,
    sale_id: String,
    transport: Transport,
    options: Options,
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phone")
            .field("sale_id", &self.sale_id)
            .field("pairing", &self.pairing)
            .finish_non_exhaustive()
    }
}

impl Phone {
    /// The phone with its stored pairing (`options.terminal`, or the
    /// default one).
    pub fn open(options: Options) -> Result<Self, PhoneError> {
        let pairing = PairingStore::new(&options.data_dir).get(options.terminal.as_deref())?;
        Self::with_pairing(options, pairing)
    }

    /// The phone with `pairing`, stored or not (a pairing checked before
    /// it is stored).
    pub fn with_pairing(options: Options, pairing: Pairing) -> Result<Self, PhoneError> {
        let unreachable = |last| PhoneError::Unreachable { attempts: 0, last };
        let transport = match &options.serial {
            Some((device, baud)) => Transport::Serial(Box::new(
                Serial::open(device, *baud, options.timeouts).map_err(unreachable)?,
            )),
            None => {
                let https = Https::new(&pairing, options.timeouts).map_err(unreachable)?;
                Transport::Https(match options.progress {
                    true => https,
                    false => https.without_progress(),
                })
            }
        };
        Self::with_transport(options, pairing, transport)
    }

    /// The phone with `pairing`, reaching the terminal over `transport`.
    pub fn with_transport(
        options: Options,
        pairing: Pairing,
        transport: Transport,
    ) -> Result<Self, PhoneError> {
        let history = History::open(&options.data_dir)?;
        let sale_id = history.sale_id()?;
        let key = pairing.key()?;
        Ok(Self {
            history,
            pairing,
            key,
            sale_id,
            transport,
            options,
        })
    }

    /// The phone's `SaleID`.
    pub fn sale_id(&self) -> &str {
        &self.sale_id
    }

    /// The pairing in use.
    pub fn pairing(&self) -> &Pairing {
        &self.pairing
    }

    /// The link in use.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The phone's history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The phone's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }

    fn header(&self, category: MessageCategory, service_id: &str) -> MessageHeader {
        MessageHeader {
            protocol_version: Some("3.0".into()),
            message_class: MessageClass::Service,
            message_category: category,
            message_type: MessageType::Request,
            service_id: Some(service_id.to_owned()),
            device_id: None,
            sale_id: Some(self.sale_id.clone()),
            poi_id: self.pairing.poi_id.clone(),
        }
    }

    fn sale_data(
        &self,
        service_id: &str,
        at: OffsetDateTime,
        supervisor: Option<&SupervisorCode>,
    ) -> Result<SaleData, PhoneError> {
        Ok(SaleData {
            sale_transaction_id: TransactionIdentification {
                transaction_id: service_id.to_owned(),
                time_stamp: stamp(at),
            },
            sale_reference_id: None,
            operator_id: self.history.operator()?,
            operator_language: None,
            shift_number: None,
            sale_to_acquirer_data: supervisor.map(SupervisorCode::sale_to_acquirer_data),
        })
    }

    /// A sale of `amount`.
    pub async fn pay(
        &mut self,
        amount: &Money,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Outcome, PhoneError> {
        self.payment(Kind::Payment, amount, None, None, events)
            .await
    }

    /// A refund of `amount` to the card of terminal transaction
    /// `original` (its time stamp from the history, or `original_time`),
    /// authorized by a supervisor's code.
    pub async fn refund(
        &mut self,
        amount: &Money,
        original: &str,
        original_time: Option<&str>,
        supervisor: &SupervisorCode,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Outcome, PhoneError> {
        let original = self.original(original, original_time)?;
        self.payment(
            Kind::Refund,
            amount,
            Some(original),
            Some(supervisor),
            events,
        )
        .await
    }

    /// The terminal transaction `id` with its time stamp.
    fn original(
        &self,
        id: &str,
        time: Option<&str>,
    ) -> Result<TransactionIdentification, PhoneError> {
        let time_stamp = match time {
            Some(t) => t.to_owned(),
            None => self
                .history
                .find_poi_transaction(id)?
                .and_then(|r| r.poi_transaction_time)
                .ok_or_else(|| PhoneError::UnknownOriginal(id.to_owned()))?,
        };
        Ok(TransactionIdentification {
            transaction_id: id.to_owned(),
            time_stamp,
        })
    }

    async fn payment(
        &mut self,
        kind: Kind,
        amount: &Money,
        original: Option<TransactionIdentification>,
        supervisor: Option<&SupervisorCode>,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Outcome, PhoneError> {
        let at = now();
        let reference = original.as_ref().map(|o| o.transaction_id.clone());
        let service_id = self.history.begin(&NewExchange {
            poi_id: &self.pairing.poi_id,
            kind,
            amount_minor: Some(amount.minor),
            currency: Some(&amount.currency),
            reference: reference.as_deref(),
            at: &stamp(at),
        })?;
        let payment_type = match kind {
            Kind::Refund => PaymentType::Refund,
            _ => PaymentType::Normal,
        };
        let body = RequestBody::Payment(PaymentRequest {
            sale_data: self.sale_data(&service_id, at, supervisor)?,
            payment_transaction: PaymentTransaction {
                amounts_req: AmountsReq {
                    currency: amount.currency.clone(),
                    requested_amount: Some(amount.amount()),
                    tip_amount: None,
                    cash_back_amount: None,
                },
                original_poi_transaction: original.map(|o| OriginalPoiTransaction {
                    sale_id: None,
                    poi_id: Some(self.pairing.poi_id.clone()),
                    poi_transaction_id: Some(o),
                    approval_code: None,
                }),
            },
            payment_data: Some(PaymentData {
                payment_type: Some(payment_type),
            }),
        });
        self.transaction(kind, service_id, body, events).await
    }

    /// Reverses terminal transaction `original` (its time stamp from the
    /// history, or `original_time`), authorized by a supervisor's code.
    pub async fn reverse(
        &mut self,
        original: &str,
        original_time: Option<&str>,
        supervisor: &SupervisorCode,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Outcome, PhoneError> {
        let original = self.original(original, original_time)?;
        let at = now();
        let service_id = self.history.begin(&NewExchange {
            poi_id: &self.pairing.poi_id,
            kind: Kind::Reversal,
            amount_minor: None,
            currency: None,
            reference: Some(&original.transaction_id),
            at: &stamp(at),
        })?;
        let body = RequestBody::Reversal(ReversalRequest {
            original_poi_transaction: OriginalPoiTransaction {
                sale_id: None,
                poi_id: Some(self.pairing.poi_id.clone()),
                poi_transaction_id: Some(original),
                approval_code: None,
            },
            reversal_reason: ReversalReason::MerchantCancel,
            reversed_amount: None,
            sale_data: Some(self.sale_data(&service_id, at, Some(supervisor))?),
        });
        self.transaction(Kind::Reversal, service_id, body, events)
            .await
    }

    /// Sends a payment, refund or reversal: never twice; a lost answer is
    /// asked for.
    async fn transaction(
        &mut self,
        kind: Kind,
        service_id: String,
        body: RequestBody,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Outcome, PhoneError> {
        let what = match kind {
            Kind::Refund => "refund",
            Kind::Reversal => "reversal",
            _ => "payment",
        };
        let request = SaleToPoiRequest {
            header: self.header(body.category(), &service_id),
            body,
        };
        let delivered = match self.deliver(&request, events).await {
            Ok(d) => d,
            Err(e) => {
                self.finish_failed(&service_id, e.state(), &e)?;
                return Err(e);
            }
        };
        let (response, recovered) = match delivered {
            Delivered::Answer(response) => (*response, None),
            Delivered::Lost(lost) => {
                events(Event::AnswerLost {
                    reason: lost.clone(),
                });
                match self.recover(&request, events).await {
                    Step::Recovered(response) => (*response, Some(lost)),
                    Step::NotReceived => {
                        let e = PhoneError::NotReceived {
                            what,
                            service_id: service_id.clone(),
                            lost,
                        };
                        self.finish_failed(&service_id, e.state(), &e)?;
                        return Err(e);
                    }
                    Step::Unknown(why) => {
                        let e = PhoneError::Unknown {
                            what,
                            service_id: service_id.clone(),
                            lost,
                            why,
                        };
                        self.finish_failed(&service_id, e.state(), &e)?;
                        return Err(e);
                    }
                    Step::Ask(_) => unreachable!("recover() asks until it ends"),
                }
            }
        };
        let state = if recovered.is_some() {
            State::Recovered
        } else {
            State::Answered
        };
        self.history.finish(
            &service_id,
            state,
            &finish_of(&response.body),
            &stamp(now()),
        )?;
        Ok(Outcome {
            service_id,
            response,
            recovered,
        })
    }

    fn finish_failed(
        &self,
        service_id: &str,
        state: State,
        error: &PhoneError,
    ) -> Result<(), PhoneError> {
        let finish = Finish {
            reason: Some(error.to_string()),
            ..Finish::default()
        };
        self.history
            .finish(service_id, state, &finish, &stamp(now()))?;
        Ok(())
    }

    /// Sends `request` until it is delivered or cannot be, retrying with
    /// backoff while nothing was delivered.
    async fn deliver(
        &mut self,
        request: &SaleToPoiRequest,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Delivered, PhoneError> {
        let envelope = paycrypto::nexo::encrypt(&self.key, request.to_json().as_bytes())?;
        let service_id = request.header.service_id.clone().unwrap_or_default();
        let mut attempt = 1;
        loop {
            let sent = {
                let Self {
                    transport,
                    key,
                    sale_id,
                    ..
                } = self;
                let mut on_notification = |bytes: &[u8]| {
                    if let Some(line) = notification(bytes, key, sale_id, &service_id) {
                        events(Event::Progress(line));
                    }
                };
                transport
                    .exchange(envelope.as_bytes(), &mut on_notification)
                    .await
            };
            match sent {
                Ok(bytes) => {
                    return match self.read(request, &bytes) {
                        Read::Answer(answer) => Ok(Delivered::Answer(answer)),
                        Read::Rejected {
                            details,
                            security: true,
                        } => Err(PhoneError::KeyRejected { details }),
                        Read::Rejected { details, .. } => Err(PhoneError::Rejected { details }),
                        Read::Unusable(why) => Ok(Delivered::Lost(why)),
                    };
                }
                Err(e) if e.maybe_delivered() => return Ok(Delivered::Lost(e.to_string())),
                Err(e) => {
                    let pause = e
                        .retriable()
                        .then(|| self.options.connect.pause_before(attempt + 1))
                        .flatten();
                    let Some(pause) = pause else {
                        return Err(PhoneError::Unreachable {
                            attempts: attempt,
                            last: e,
                        });
                    };
                    attempt += 1;
                    events(Event::Retry {
                        attempt,
                        pause,
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Reads an answer to `request`: secured with the pairing's key and
    /// consistent with the request, or a `Reject` notification.
    fn read(&self, request: &SaleToPoiRequest, bytes: &[u8]) -> Read {
        match parse_response(bytes, Security::Required(&self.key)) {
            Ok(inbound) => {
                let mismatches = check::response(request, &inbound.message);
                if mismatches.is_empty() {
                    Read::Answer(Box::new(inbound.message))
                } else {
                    Read::Unusable(format!(
                        "the answer is not this request's: {}",
                        check::describe(&mismatches)
                    ))
                }
            }
            Err(error) => match rejection(bytes, &self.key) {
                Some((details, security)) => Read::Rejected { details, security },
                None => Read::Unusable(format!("unreadable answer: {error}")),
            },
        }
    }

    /// Asks the terminal what became of `original` until the recovery
    /// ends.
    async fn recover(
        &mut self,
        original: &SaleToPoiRequest,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Step {
        let mut recovery = Recovery::new(self.options.status);
        let mut step = recovery.start();
        while let Step::Ask(pause) = step {
            events(Event::Asking {
                attempt: recovery.asked(),
                pause,
            });
            tokio::time::sleep(pause).await;
            let observation = self.ask_status(original, events).await;
            step = recovery.observe(observation);
        }
        step
    }

    /// One status request about `original`.
    async fn ask_status(
        &mut self,
        original: &SaleToPoiRequest,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Observation {
        let reference = original.header.service_id.as_deref().unwrap_or_default();
        match self
            .status_exchange(reference, original.body.category(), events)
            .await
        {
            Ok((status, _)) => Observation::Verdict(recovery::judge(original, &status)),
            Err(e) => Observation::Failure {
                fatal: matches!(
                    e,
                    PhoneError::KeyRejected { .. }
                        | PhoneError::Unreachable {
                            last: TransportError::CertificateMismatch(_),
                            ..
                        }
                ),
                reason: e.to_string(),
            },
        }
    }

    /// Sends a request that is safe to send again (status, diagnosis,
    /// login, logout) once; its outcome is recorded.
    async fn simple(
        &mut self,
        kind: Kind,
        reference: Option<&str>,
        body: impl FnOnce(&str) -> RequestBody,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<(String, SaleToPoiResponse), PhoneError> {
        let service_id = self.history.begin(&NewExchange {
            poi_id: &self.pairing.poi_id,
            kind,
            amount_minor: None,
            currency: None,
            reference,
            at: &stamp(now()),
        })?;
        let body = body(&service_id);
        let request = SaleToPoiRequest {
            header: self.header(body.category(), &service_id),
            body,
        };
        let answer = match self.deliver(&request, events).await {
            Ok(Delivered::Answer(answer)) => Ok(*answer),
            Ok(Delivered::Lost(why)) => Err(PhoneError::BadAnswer(why)),
            Err(e) => Err(e),
        };
        match &answer {
            Ok(a) => self.history.finish(
                &service_id,
                State::Answered,
                &Finish {
                    result: Some(a.body.response().result.to_string()),
                    reason: (a.body.response().result != ResultType::Success)
                        .then(|| explain::reason(a.body.response())),
                    ..Finish::default()
                },
                &stamp(now()),
            )?,
            Err(e) => self.finish_failed(&service_id, e.state(), e)?,
        }
        answer.map(|a| (service_id, a))
    }

    async fn status_exchange(
        &mut self,
        reference: &str,
        category: MessageCategory,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<(TransactionStatusResponse, String), PhoneError> {
        let sale_id = self.sale_id.clone();
        let (service_id, answer) = self
            .simple(
                Kind::Status,
                Some(reference),
                |_| {
                    RequestBody::TransactionStatus(TransactionStatusRequest {
                        message_reference: Some(MessageReference {
                            message_category: Some(category),
                            service_id: Some(reference.to_owned()),
                            device_id: None,
                            sale_id: Some(sale_id),
                            poi_id: None,
                        }),
                        receipt_reprint_flag: Some(true),
                        document_qualifier: vec![DocumentQualifier::CustomerReceipt],
                    })
                },
                events,
            )
            .await?;
        match answer.body {
            ResponseBody::TransactionStatus(status) => Ok((status, service_id)),
            other => Err(PhoneError::BadAnswer(format!(
                "a {} answer to a status request",
                other.category()
            ))),
        }
    }

    /// What became of this phone's exchange `service_id`: the terminal's
    /// `TransactionStatusResponse`. An exchange of the history whose
    /// outcome was unknown is completed with what the terminal says.
    pub async fn status(
        &mut self,
        service_id: &str,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<StatusReport, PhoneError> {
        let record = self.history.find(service_id)?;
        let category = match record.as_ref().map(|r| r.kind) {
            Some(Kind::Reversal) => MessageCategory::Reversal,
            _ => MessageCategory::Payment,
        };
        let (status, status_service_id) =
            self.status_exchange(service_id, category, events).await?;
        let repeated = status.repeated_message_response.as_ref().and_then(|r| {
            let body = &r.repeated_response_message_body;
            let body = match (&body.payment_response, &body.reversal_response) {
                (Some(p), _) => ResponseBody::Payment(p.clone()),
                (None, Some(r)) => ResponseBody::Reversal(r.clone()),
                (None, None) => return None,
            };
            Some(SaleToPoiResponse {
                header: r.message_header.clone(),
                body,
            })
        });
        let mismatches = match &repeated {
            Some(r) => check::header(&self.header(category, service_id), &r.header),
            None => Vec::new(),
        };
        if let Some(record) = record.filter(|r| matches!(r.state, State::Sent | State::Unknown)) {
            self.complete(&record, &status, repeated.as_ref(), &mismatches)?;
        }
        Ok(StatusReport {
            service_id: status_service_id,
            status,
            repeated,
            mismatches,
        })
    }

    /// Completes an exchange whose outcome was unknown with a status
    /// answer about it.
    fn complete(
        &self,
        record: &Record,
        status: &TransactionStatusResponse,
        repeated: Option<&SaleToPoiResponse>,
        mismatches: &[Mismatch],
    ) -> Result<(), PhoneError> {
        let at = stamp(now());
        match (repeated, status.response.error_condition) {
            (Some(answer), _) if mismatches.is_empty() => {
                self.history.finish(
                    &record.service_id,
                    State::Recovered,
                    &finish_of(&answer.body),
                    &at,
                )?;
            }
            (None, Some(nexo::wire::ErrorCondition::NotFound)) => {
                let finish = Finish {
                    reason: Some(explain::reason(&status.response)),
                    ..Finish::default()
                };
                self.history
                    .finish(&record.service_id, State::NotReceived, &finish, &at)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `DiagnosisRequest` with the hosts checked.
    pub async fn diagnosis(
        &mut self,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<DiagnosisResponse, PhoneError> {
        let poi_id = self.pairing.poi_id.clone();
        let (_, answer) = self
            .simple(
                Kind::Diagnosis,
                None,
                |_| {
                    RequestBody::Diagnosis(DiagnosisRequest {
                        poi_id: Some(poi_id),
                        host_diagnosis_flag: Some(true),
                        acquirer_id: Vec::new(),
                    })
                },
                events,
            )
            .await?;
        match answer.body {
            ResponseBody::Diagnosis(d) => Ok(d),
            other => Err(PhoneError::BadAnswer(format!(
                "a {} answer to a diagnosis request",
                other.category()
            ))),
        }
    }

    /// Logs cashier `operator` in at the terminal; on success, later
    /// payments carry the operator.
    pub async fn login(
        &mut self,
        operator: &str,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Outcome, PhoneError> {
        let at = stamp(now());
        let (service_id, response) = self
            .simple(
                Kind::Login,
                None,
                |_| {
                    RequestBody::Login(LoginRequest {
                        date_time: at,
                        sale_software: SaleSoftware {
                            manufacturer_id: Some("posnet".into()),
                            application_name: "posnet phone".into(),
                            software_version: env!("CARGO_PKG_VERSION").into(),
                            certification_code: "none".into(),
                        },
                        sale_terminal_data: Some(SaleTerminalData {
                            terminal_environment: Some(TerminalEnvironment::Attended),
                            sale_capabilities: vec![
                                SaleCapability::CashierDisplay,
                                SaleCapability::CashierStatus,
                                SaleCapability::CashierInput,
                            ],
                            totals_group_id: None,
                        }),
                        training_mode_flag: None,
                        operator_language: "en".into(),
                        operator_id: Some(operator.to_owned()),
                        shift_number: None,
                        poi_serial_number: None,
                    })
                },
                events,
            )
            .await?;
        let outcome = Outcome {
            service_id,
            response,
            recovered: None,
        };
        if outcome.succeeded() {
            self.history.set_operator(Some(operator))?;
        }
        Ok(outcome)
    }

    /// Ends the phone's session at the terminal; the operator is
    /// forgotten.
    pub async fn logout(
        &mut self,
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Outcome, PhoneError> {
        let (service_id, response) = self
            .simple(
                Kind::Logout,
                None,
                |_| {
                    RequestBody::Logout(LogoutRequest {
                        maintenance_allowed: Some(true),
                    })
                },
                events,
            )
            .await?;
        let outcome = Outcome {
            service_id,
            response,
            recovered: None,
        };
        if outcome.succeeded() {
            self.history.set_operator(None)?;
        }
        Ok(outcome)
    }
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// The status request's own `ServiceID`.
    pub service_id: String,
    /// The terminal's answer.
    pub status: TransactionStatusResponse,
    /// The original answer, repeated, when the terminal has it.
    pub repeated: Option<SaleToPoiResponse>,
    /// How the repeated answer's header differs from this phone's
    /// request (empty when it is this phone's).
    pub mismatches: Vec<Mismatch>,
}

/// What the history keeps of an answer.
fn finish_of(body: &ResponseBody) -> Finish {
    let response = body.response();
    let mut finish = Finish {
        result: Some(response.result.to_string()),
        reason: (response.result != ResultType::Success).then(|| explain::reason(response)),
        ..Finish::default()
    };
    match body {
        ResponseBody::Payment(p) => {
            finish.poi_transaction = p.poi_data.as_ref().map(|d| {
                (
                    d.poi_transaction_id.transaction_id.clone(),
                    d.poi_transaction_id.time_stamp.clone(),
                )
            });
            if let Some(result) = &p.payment_result {
                finish.masked_pan = result
                    .payment_instrument_data
                    .as_ref()
                    .and_then(|i| i.card_data.as_ref())
                    .and_then(|c| c.masked_pan.clone());
                finish.approval_code = result
                    .payment_acquirer_data
                    .as_ref()
                    .and_then(|a| a.approval_code.clone());
            }
        }
        ResponseBody::Reversal(r) => {
            finish.poi_transaction = r.poi_data.as_ref().map(|d| {
                (
                    d.poi_transaction_id.transaction_id.clone(),
                    d.poi_transaction_id.time_stamp.clone(),
                )
            });
        }
        _ => {}
    }
    finish
}

/// The progress line of a notification for exchange `service_id` of
/// `sale_id`, if it is one and concerns it.
fn notification(bytes: &[u8], key: &NexoKey, sale_id: &str, service_id: &str) -> Option<String> {
    let inbound = parse_request(bytes, Security::Required(key)).ok()?;
    explain::concerns(&inbound.message.header, sale_id, service_id)
        .then(|| explain::progress(&inbound.message))
        .flatten()
}

/// The terminal's `Reject` of a message, if `bytes` is one: its details,
/// and whether it was rejected for its security (the key). A Reject is
/// sent plain when the terminal cannot use the sender's key.
fn rejection(bytes: &[u8], key: &NexoKey) -> Option<(String, bool)> {
    let inbound = parse_request(bytes, Security::Optional(key)).ok()?;
    let RequestBody::Event(event) = inbound.message.body else {
        return None;
    };
    if event.event_to_notify != EventToNotify::Reject {
        return None;
    }
    let details = event
        .event_details
        .as_deref()
        .map(explain::message_of)
        .unwrap_or_default();
    // nexo's reader names security failures so (InboundError::Security).
    let security = details.starts_with("message rejected by message security");
    Some((details, security))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_security_reject_is_told_from_an_unreadable_one() {
        let key = NexoKey::derive("phone passphrase", "phone-1", 1).unwrap();
        let other = NexoKey::derive("another passphrase", "phone-1", 1).unwrap();
        let payment = include_bytes!("../../nexo/tests/fixtures/requests/payment.json");
        let secured = paycrypto::nexo::encrypt(&other, payment).unwrap();
        // The terminal reads it with its own key and answers as nexo does.
        let error = parse_request(secured.as_bytes(), Security::Required(&key)).unwrap_err();
        let reply = error.reply("T1", secured.as_bytes(), now()).to_json();
        let (details, security) = rejection(reply.as_bytes(), &key).unwrap();
        assert!(security, "{details}");
        assert!(details.contains("authentication failed"), "{details}");

        let unreadable = include_bytes!("../../nexo/tests/fixtures/replies/unreadable.reply.json");
        let (details, security) = rejection(unreadable, &key).unwrap();
        assert!(!security);
        assert!(
            details.starts_with("unreadable message at byte 103"),
            "{details}"
        );

        let approved = include_bytes!("../../nexo/tests/fixtures/responses/payment.json");
        assert_eq!(rejection(approved, &key), None);
    }

    #[test]
    fn summaries_of_an_approval_and_a_refusal() {
        let read = |json: &[u8]| parse_response(json, Security::Plain).unwrap().message.body;
        let approved = Summary::of(
            "0314092653",
            &read(include_bytes!(
                "../../nexo/tests/fixtures/responses/payment.json"
            )),
            None,
        );
        assert_eq!(approved.result, "Success");
        assert_eq!(approved.amount.as_deref(), Some("12.50 EUR"));
        assert_eq!(approved.masked_pan.as_deref(), Some("627012******0018"));
        assert_eq!(approved.approval_code.as_deref(), Some("A1B2C3"));
        assert_eq!(approved.poi_transaction_id.as_deref(), Some("000123"));
        assert_eq!(approved.receipt.len(), 4);
        assert_eq!(approved.advice, None);

        let declined = Summary::of(
            "0314092653",
            &read(include_bytes!(
                "../../nexo/tests/fixtures/responses/payment-declined.json"
            )),
            Some("timeout".into()),
        );
        assert_eq!(declined.error_condition.as_deref(), Some("Refusal"));
        assert_eq!(
            declined.reason,
            "Refusal: insufficient funds (responseCode=51)"
        );
        assert!(declined.advice.unwrap().contains("another card"));
        assert_eq!(declined.amount.as_deref(), Some("0.00 EUR"));
        assert_eq!(declined.recovered.as_deref(), Some("timeout"));
    }

    #[test]
    fn supervisor_codes_are_six_digits_and_never_shown() {
        let code = SupervisorCode::new("042917").unwrap();
        assert_eq!(code.sale_to_acquirer_data(), "supervisorCode=042917");
        assert!(!format!("{code:?}").contains("042917"));
        for bad in ["42917", "0429171", "04291a", "", "０４２９１７"] {
            assert!(matches!(
                SupervisorCode::new(bad),
                Err(PhoneError::SupervisorCode)
            ));
        }
    }

    #[test]
    fn notifications_are_opened_with_the_key_and_filtered() {
        let key = NexoKey::derive("phone passphrase", "phone-1", 1).unwrap();
        let display = include_bytes!("../../nexo/tests/fixtures/requests/display.json");
        let secured = paycrypto::nexo::encrypt(&key, display).unwrap();
        assert_eq!(
            notification(secured.as_bytes(), &key, "ECR-1", "0314092653").as_deref(),
            Some("Present card EUR 12.50")
        );
        assert_eq!(notification(secured.as_bytes(), &key, "ECR-1", "1"), None);
        // Plain notifications are not trusted: anyone on the network could
        // push them.
        assert_eq!(notification(display, &key, "ECR-1", "0314092653"), None);
    }
}
