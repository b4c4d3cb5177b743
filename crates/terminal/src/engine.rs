//! The transaction engine: every decision a terminal makes, with no I/O.
//! Time comes in as milliseconds and replies as decoded, MAC-checked
//! messages, so every path — including every timeout — is tested
//! deterministically. The runtime performs what the engine decides.

use iso8583::message_set::TxnType;
use iso8583::params as tag;
use iso8583::{Message, tlv};
use std::fmt;

/// Payment methods a terminal can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Cards: chip, contactless, swipe or keyed.
    Card,
    /// QR codes.
    Qr,
}

/// The terminal's parameters, as the host sends them at sign-on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Merchant name for receipts.
    pub merchant_name: String,
    /// ISO 4217 numeric currency.
    pub currency: u16,
    /// Largest amount per transaction.
    pub max_amount: u64,
    /// Largest amount approved offline (0: never offline).
    pub offline_floor: u64,
    /// Largest total of offline approvals awaiting forwarding.
    pub offline_total_limit: u64,
    /// Enabled methods.
    pub methods: Vec<Method>,
    /// Seconds between echoes when idle.
    pub echo_interval_secs: u32,
    /// Parameter version.
    pub version: u32,
}

/// Field 62 of a sign-on response is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("terminal parameters: {0}")]
pub struct ParamsError(String);

impl Params {
    /// Parses the BER-TLV parameters of a sign-on response. Offline
    /// approvals may total at most ten floor limits before forwarding.
    pub fn from_tlv(data: &[u8]) -> Result<Self, ParamsError> {
        let text = |t: u32| -> Result<String, ParamsError> {
            let v = tlv::find(data, t).map_err(|e| ParamsError(e.to_string()))?;
            let v = v.ok_or_else(|| ParamsError(format!("tag {t:X} missing")))?;
            String::from_utf8(v.to_vec()).map_err(|_| ParamsError(format!("tag {t:X} is not text")))
        };
        let number = |t: u32| -> Result<u64, ParamsError> {
            text(t)?
                .parse()
                .map_err(|_| ParamsError(format!("tag {t:X} is not a number")))
        };
        let methods = text(tag::METHODS)?
            .split(',')
            .filter_map(|m| match m.trim() {
                "card" => Some(Method::Card),
                "qr" => Some(Method::Qr),
                _ => None,
            })
            .collect();
        let offline_floor = number(tag::OFFLINE_FLOOR)?;
        Ok(Params {
            merchant_name: text(tag::MERCHANT_NAME)?,
            currency: u16::try_from(number(tag::CURRENCY)?)
                .map_err(|_| ParamsError("currency out of range".into()))?,
            max_amount: number(tag::MAX_AMOUNT)?,
            offline_floor,
            offline_total_limit: offline_floor.saturating_mul(10),
            methods,
            echo_interval_secs: u32::try_from(number(tag::ECHO_INTERVAL)?).unwrap_or(u32::MAX),
            version: u32::try_from(number(tag::VERSION)?).unwrap_or(0),
        })
    }
}

/// What a transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnKind {
    /// Purchase.
    Sale,
    /// Cancel a sale of the open batch.
    Void,
    /// Return money for an earlier sale.
    Refund,
    /// Hold an amount.
    PreAuth,
    /// Release a hold.
    PreAuthCancel,
    /// Charge (part of) a hold.
    Completion,
    /// Ask the card's balance.
    Balance,
}

impl TxnKind {
    /// Its entry in the dialect's message set (MTI, 3, 25, 60.1).
    pub fn txn_type(self) -> TxnType {
        match self {
            TxnKind::Sale => TxnType::Sale,
            TxnKind::Void => TxnType::Void,
            TxnKind::Refund => TxnType::Refund,
            TxnKind::PreAuth => TxnType::PreAuth,
            TxnKind::PreAuthCancel => TxnType::PreAuthCancel,
            TxnKind::Completion => TxnType::Completion,
            TxnKind::Balance => TxnType::Balance,
        }
    }

    /// Whether an unknown outcome must be reversed (0400). Refunds are
    /// advices (0220) and balance inquiries move no money.
    pub fn reversible(self) -> bool {
        !matches!(self, TxnKind::Refund | TxnKind::Balance)
    }

    /// Whether it names an original transaction (field 61).
    pub fn needs_original(self) -> bool {
        matches!(
            self,
            TxnKind::Void | TxnKind::Refund | TxnKind::PreAuthCancel | TxnKind::Completion
        )
    }

    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            TxnKind::Sale => "sale",
            TxnKind::Void => "void",
            TxnKind::Refund => "refund",
            TxnKind::PreAuth => "preauth",
            TxnKind::PreAuthCancel => "preauth_cancel",
            TxnKind::Completion => "completion",
            TxnKind::Balance => "balance",
        }
    }

    /// From [`TxnKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Sale,
            Self::Void,
            Self::Refund,
            Self::PreAuth,
            Self::PreAuthCancel,
            Self::Completion,
            Self::Balance,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// How the card was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Magnetic stripe.
    Swipe,
    /// Contact chip.
    Chip,
    /// Contactless.
    Contactless,
    /// Keyed by the cashier.
    Manual,
    /// A wallet's payment code scanned from a QR code or barcode.
    Qr,
}

impl Entry {
    /// Field 22 (point-of-service entry mode): PIN capability 1 (can
    /// accept a PIN) for cards, 2 (cannot) for a scanned payment code.
    pub fn pos_entry_mode(self) -> &'static str {
        match self {
            Entry::Swipe => "021",
            Entry::Chip => "051",
            Entry::Contactless => "071",
            Entry::Manual => "011",
            Entry::Qr => "032",
        }
    }
}

/// What the reader got from the card.
#[derive(Clone, PartialEq, Eq)]
pub struct CardData {
    /// Primary account number.
    pub pan: String,
    /// Expiry YYMM.
    pub expiry: String,
    /// How it was read.
    pub entry: Entry,
    /// Whether the card lets the terminal approve offline (a chip card's
    /// issuer action codes; keyed and swiped cards never do).
    pub offline_allowed: bool,
}

impl fmt::Debug for CardData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardData")
            .field("pan", &iso8583::text::mask_pan(&self.pan))
            .field("entry", &self.entry)
            .field("offline_allowed", &self.offline_allowed)
            .finish_non_exhaustive()
    }
}

/// Why the terminal refused before sending anything to the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Zero or over the terminal's limit.
    #[error("amount {amount} is outside this terminal's limits (1 to {max})")]
    AmountOutsideLimits {
        /// Asked.
        amount: u64,
        /// Largest allowed.
        max: u64,
    },
    /// The method is not enabled on this terminal.
    #[error("{0:?} payments are not enabled on this terminal")]
    MethodNotEnabled(Method),
    /// The card's expiry has passed.
    #[error("card expired ({expiry}, YYMM)")]
    CardExpired {
        /// The card's expiry.
        expiry: String,
    },
    /// The card could not be read.
    #[error("card unreadable: {0}")]
    CardUnreadable(String),
    /// Neither online nor allowed offline.
    #[error("host unreachable and this transaction cannot be approved offline: {0}")]
    HostUnreachable(&'static str),
    /// Void, refund, cancel or completion without the original's reference.
    #[error("this transaction needs the original's batch and trace number")]
    OriginalRequired,
    /// No sign-on yet: parameters unknown.
    #[error("terminal not signed on; no parameters yet")]
    NotSignedOn,
}

/// Where a transaction goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the host now.
    Online,
    /// Approved here, forwarded later as an advice.
    Offline,
}

/// A transaction's request, before routing.
#[derive(Debug, Clone)]
pub struct TxnRequest {
    /// What to do.
    pub kind: TxnKind,
    /// Amount in minor units (0 for balance inquiries).
    pub amount: u64,
    /// Method used.
    pub method: Method,
    /// The original's (batch, STAN), for kinds that need one.
    pub original: Option<(u32, u32)>,
}

/// Local checks and routing. `today_yymm` compares expiries; `offline_pending`
/// is the total of offline approvals not yet forwarded.
pub fn route(
    params: &Params,
    req: &TxnRequest,
    card: &CardData,
    online: bool,
    offline_pending: u64,
    today_yymm: &str,
) -> Result<Route, Refusal> {
    // A scanned payment code pays by QR whatever the request named.
    let method = if card.entry == Entry::Qr {
        Method::Qr
    } else {
        req.method
    };
    if !params.methods.contains(&method) {
        return Err(Refusal::MethodNotEnabled(method));
    }
    if req.kind != TxnKind::Balance && (req.amount == 0 || req.amount > params.max_amount) {
        return Err(Refusal::AmountOutsideLimits {
            amount: req.amount,
            max: params.max_amount,
        });
    }
    if req.kind.needs_original() && req.original.is_none() {
        return Err(Refusal::OriginalRequired);
    }
    // A payment code has no expiry: the host checks its time step.
    if card.entry != Entry::Qr {
        if card.expiry.len() != 4 || !card.expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Refusal::CardUnreadable("expiry is not YYMM".into()));
        }
        if card.expiry.as_str() < today_yymm {
            return Err(Refusal::CardExpired {
                expiry: card.expiry.clone(),
            });
        }
    }
    if online {
        return Ok(Route::Online);
    }
    if req.kind != TxnKind::Sale {
        return Err(Refusal::HostUnreachable("only sales are approved offline"));
    }
    if !card.offline_allowed {
        return Err(Refusal::HostUnreachable(
            "the card requires online authorization",
        ));
    }
    if req.amount > params.offline_floor {
        return Err(Refusal::HostUnreachable(
            "amount above the offline floor limit",
        ));
    }
    if offline_pending + req.amount > params.offline_total_limit {
        return Err(Refusal::HostUnreachable(
            "offline approvals awaiting the host are at their limit",
        ));
    }
    Ok(Route::Offline)
}

/// How a transaction ended. There is no "unknown".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The host approved.
    Approved {
        /// Field 38.
        auth_code: String,
        /// Field 37.
        rrn: String,
    },
    /// Approved by the terminal under the floor limit; the advice will be forwarded.
    ApprovedOffline,
    /// The host declined.
    Declined {
        /// Field 39.
        code: String,
        /// What it means.
        reason: &'static str,
    },
    /// No definite answer came: the transaction is reversed (the reversal
    /// is stored and goes to the host before any other financial message).
    Reversed {
        /// What went wrong.
        why: String,
    },
    /// Refused before anything was sent.
    FailedBeforeSending(Refusal),
}

impl Outcome {
    /// Stable lowercase state name.
    pub fn state(&self) -> &'static str {
        match self {
            Outcome::Approved { .. } => "approved",
            Outcome::ApprovedOffline => "approved_offline",
            Outcome::Declined { .. } => "declined",
            Outcome::Reversed { .. } => "reversed",
            Outcome::FailedBeforeSending(_) => "failed",
        }
    }
}

/// The meaning of a response code (docs/iso8583-dialect.md).
pub fn reason(code: &str) -> &'static str {
    match code {
        "00" => "approved",
        "05" => "do not honour",
        "12" => "invalid transaction",
        "13" => "invalid amount",
        "14" => "invalid card number",
        "25" => "original transaction not found",
        "30" => "format error",
        "51" => "insufficient funds",
        "54" => "expired card",
        "55" => "incorrect PIN",
        "61" => "exceeds amount limit",
        "91" => "issuer unavailable",
        "94" => "duplicate transmission",
        "96" => "system malfunction",
        "A0" => "MAC failure; the terminal signs on again",
        _ => "declined",
    }
}

/// A reply as the runtime hands it in.
#[derive(Debug)]
pub enum Reply {
    /// Decoded, matched by STAN, and its MAC verified (or an unMACed A0).
    Valid(Message),
    /// Unreadable, or its MAC failed.
    Invalid(String),
}

/// What the runtime must do with the stored reversal of this exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalAction {
    /// The outcome is definite: delete it, unsent.
    Discard,
    /// The outcome is unknown: keep it; it goes to the host next.
    Keep,
}

/// A decision of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How the transaction ended.
    pub outcome: Outcome,
    /// What happens to its stored reversal.
    pub reversal: ReversalAction,
    /// Whether the terminal must sign on again before the next request.
    pub sign_on: bool,
}

/// One online request awaiting its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    deadline_ms: u64,
    finished: bool,
}

impl Exchange {
    /// Sent at `now_ms`; unanswered after `timeout_ms` it is reversed.
    pub fn new(now_ms: u64, timeout_ms: u64) -> Self {
        Exchange {
            deadline_ms: now_ms.saturating_add(timeout_ms),
            finished: false,
        }
    }

    /// When the runtime should call [`Exchange::on_tick`] at the latest.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    fn finish(
        &mut self,
        outcome: Outcome,
        reversal: ReversalAction,
        sign_on: bool,
    ) -> Option<Step> {
        if std::mem::replace(&mut self.finished, true) {
            return None;
        }
        Some(Step {
            outcome,
            reversal,
            sign_on,
        })
    }

    /// The reply arrived. `None` if the exchange had already ended (a late reply
    /// after a timeout changes nothing: the reversal stands).
    pub fn on_reply(&mut self, reply: Reply) -> Option<Step> {
        match reply {
            Reply::Invalid(why) => self.finish(
                Outcome::Reversed {
                    why: format!("unusable reply: {why}"),
                },
                ReversalAction::Keep,
                false,
            ),
            Reply::Valid(msg) => {
                let code = msg.response_code().unwrap_or("").to_string();
                if code == "00" {
                    let auth_code = msg.auth_code().unwrap_or("").to_string();
                    let rrn = msg.rrn().unwrap_or("").to_string();
                    self.finish(
                        Outcome::Approved { auth_code, rrn },
                        ReversalAction::Discard,
                        false,
                    )
                } else {
                    let sign_on = code == "A0";
                    let reason = reason(&code);
                    self.finish(
                        Outcome::Declined { code, reason },
                        ReversalAction::Discard,
                        sign_on,
                    )
                }
            }
        }
    }

    /// Time passes. Past the deadline the transaction is reversed.
    pub fn on_tick(&mut self, now_ms: u64) -> Option<Step> {
        if now_ms < self.deadline_ms {
            return None;
        }
        self.finish(
            Outcome::Reversed {
                why: "no answer from the host in time".into(),
            },
            ReversalAction::Keep,
            false,
        )
    }

    /// The connection broke while waiting.
    pub fn on_link_lost(&mut self) -> Option<Step> {
        self.finish(
            Outcome::Reversed {
                why: "connection to the host lost".into(),
            },
            ReversalAction::Keep,
            false,
        )
    }
}

/// A stored message awaiting its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafKind {
    /// A 0400 reversal: always first.
    Reversal,
    /// A 0220 advice of an offline approval.
    Advice,
}

/// An item of the store-and-forward queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafItem {
    /// Queue position (journal row id): older first within a kind.
    pub id: i64,
    /// Reversal or advice.
    pub kind: SafKind,
}

/// The next stored message to send: reversals before advices, oldest first.
pub fn next_saf(items: &[SafItem]) -> Option<&SafItem> {
    items
        .iter()
        .filter(|i| i.kind == SafKind::Reversal)
        .min_by_key(|i| i.id)
        .or_else(|| {
            items
                .iter()
                .filter(|i| i.kind == SafKind::Advice)
                .min_by_key(|i| i.id)
        })
}

/// What a reply means for a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafAck {
    /// Acknowledged: delete it.
    Done,
    /// Send it again later.
    Retry,
    /// Sign on, then send it again.
    SignOnThenRetry,
}

/// Interprets the reply to a stored message. Any answer the host gave on
/// purpose settles it (00, or 25 for a reversal whose original never arrived,
/// 12 for one that can no longer be undone, 94 for a repeat) except A0,
/// which says the host could not check it at all.
pub fn saf_ack(reply: &Reply) -> SafAck {
    match reply {
        Reply::Invalid(_) => SafAck::Retry,
        Reply::Valid(msg) => match msg.response_code() {
            Some("A0") => SafAck::SignOnThenRetry,
            Some("96") | Some("91") | None => SafAck::Retry,
            Some(_) => SafAck::Done,
        },
    }
}

/// Settlement totals of a batch, as field 48 carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sales, completions and offline sales approved.
    pub debit_amount: u64,
    /// Their count.
    pub debit_count: u32,
    /// Refunds approved.
    pub credit_amount: u64,
    /// Their count.
    pub credit_count: u32,
}

impl Totals {
    /// The 30 digits of field 48 in a 0500 request.
    pub fn field48(&self) -> String {
        format!(
            "{:012}{:03}{:012}{:03}",
            self.debit_amount.min(999_999_999_999),
            self.debit_count.min(999),
            self.credit_amount.min(999_999_999_999),
            self.credit_count.min(999)
        )
    }
}

/// Whether a 0510 says the batch balanced (the 31st digit of field 48 is `1`).
pub fn settlement_balanced(reply: &Message) -> Option<bool> {
    match reply.get_str(48)?.as_bytes().get(30)? {
        b'1' => Some(true),
        b'2' | b'3' => Some(false),
        _ => None,
    }
}
