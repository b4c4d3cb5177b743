//! Reading a received message: plain or secured (`NexoBlob` and
//! `SecurityTrailer`, opened with [`paycrypto::nexo`]), into a typed
//! request or response, and what to answer when that fails.
//!
//! The rules (each is a nexo answer, never silence):
//!
//! | what was received                                   | answer |
//! |-----------------------------------------------------|--------|
//! | JSON whose `MessageHeader` cannot be read           | `EventNotification` `Reject`, `EventDetails` saying where it broke |
//! | a readable header, the rest malformed               | the category's response, `Failure`, `MessageFormat` |
//! | wrong key identifier or version, failed HMAC, a plain message where security is required | `EventNotification` `Reject`; the content is not acted on |
//! | a request nexo defines but posnet does not serve, a payment type other than `Normal` or `Refund` | `Failure`, `NotAllowed` ([`screen`]) |
//! | an amount over the terminal's limit                  | `Failure`, `Refusal`, `AdditionalResponse` saying why ([`check_limit`]) |
//!
//! Categories answered by no response of their own (abort, notifications,
//! display and input) get the `Reject` notification where others get a
//! failure response.

use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use paycrypto::nexo::{MAX_MESSAGE_LEN, NexoError, NexoKey};
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::amount::{Amount, AmountError};
use crate::message::{
    OtherResponse, REQUEST_ROOT, RESPONSE_ROOT, RequestBody, ResponseBody, SaleToPoiRequest,
    SaleToPoiResponse, ToJson, Verbatim,
};
use crate::model::{
    EventNotification, MessageHeader, PaymentRequest, Response, additional_response,
};
use crate::wire::{
    ErrorCondition, EventToNotify, MessageCategory, MessageClass, MessageType, PaymentType,
};

/// How much of a rejected message is echoed in `RejectedMessage`: enough
/// to recognise it, small enough that the notification still fits a
/// serial frame.
pub const REJECTED_MESSAGE_MAX: usize = 4096;

/// Which messages are accepted, secured or plain.
#[derive(Debug, Clone, Copy)]
pub enum Security<'k> {
    /// Plain messages only (no key configured).
    Plain,
    /// Secured messages are opened with the key; plain ones are accepted
    /// too (a link protected otherwise, tests).
    Optional(&'k NexoKey),
    /// Only messages secured with the key are accepted.
    Required(&'k NexoKey),
}

/// A message read from the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound<M> {
    /// The message.
    pub message: M,
    /// Whether it came secured (its answer must be secured with the same
    /// key).
    pub secured: bool,
}

/// A received message could not be read; [`InboundError::reply`] is the
/// answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InboundError {
    /// Larger than [`MAX_MESSAGE_LEN`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_LEN}-byte limit")]
    TooLarge(usize),
    /// Not JSON, or JSON whose `MessageHeader` cannot be read.
    #[error("unreadable message at byte {offset} (line {line}, column {column}): {reason}")]
    Unreadable {
        /// Byte offset of the error.
        offset: usize,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The header was read; the rest of the message is malformed.
    #[error("malformed {} message: {reason}", header.message_category)]
    Malformed {
        /// The message's header.
        header: Box<MessageHeader>,
        /// What is wrong.
        reason: String,
    },
    /// The message's security did not check out (wrong key identifier or
    /// version, failed HMAC), or it came plain where security is
    /// required, or secured where no key is configured.
    #[error("message rejected by message security: {reason}")]
    Security {
        /// The clear (unauthenticated) header, when it could be read.
        header: Option<Box<MessageHeader>>,
        /// What did not check out.
        reason: SecurityFault,
    },
}

/// Why a message failed its security check.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecurityFault {
    /// The key, crypto version, nonce or HMAC did not check out.
    #[error(transparent)]
    Nexo(#[from] NexoError),
    /// A plain message where security is required.
    #[error("the message is not secured and message security is required")]
    Unsecured,
    /// A secured message where no key is configured.
    #[error("the message is secured and no key is configured")]
    NoKey,
}

/// An answer to send: a response, or (when no response can be built) an
/// event notification.
// One answer per exchange (see `ResponseBody`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A `SaleToPOIResponse`.
    Response(SaleToPoiResponse),
    /// A `SaleToPOIRequest` carrying an `EventNotification`.
    Notification(SaleToPoiRequest),
}

impl Reply {
    /// The plaintext JSON.
    pub fn to_json(&self) -> String {
        match self {
            Self::Response(r) => r.to_json(),
            Self::Notification(n) => n.to_json(),
        }
    }

    /// The JSON to send: secured with `key` when given (answers to
    /// secured requests), plain otherwise.
    pub fn encode(&self, key: Option<&NexoKey>) -> Result<String, NexoError> {
        let json = self.to_json();
        match key {
            Some(key) => paycrypto::nexo::encrypt(key, json.as_bytes()),
            None => Ok(json),
        }
    }

    /// The answer refusing a request whose `header` was read: the
    /// category's response with `Failure`, `condition` and `reason`, or,
    /// for a category answered by no response, a `Reject` notification
    /// echoing `received`.
    pub fn failure(
        header: &MessageHeader,
        condition: ErrorCondition,
        reason: &str,
        received: &[u8],
        now: OffsetDateTime,
    ) -> Self {
        match SaleToPoiResponse::failure(header, condition, reason) {
            Some(response) => Self::Response(response),
            None => Self::reject(Some(header), &header.poi_id, reason, received, now),
        }
    }

    /// An `EventNotification` `Reject` from terminal `poi_id` for
    /// `received` (echoed, at most [`REJECTED_MESSAGE_MAX`] bytes of it),
    /// addressed with what `header` says when it was read.
    pub fn reject(
        header: Option<&MessageHeader>,
        poi_id: &str,
        reason: &str,
        received: &[u8],
        now: OffsetDateTime,
    ) -> Self {
        let echoed = &received[..received.len().min(REJECTED_MESSAGE_MAX)];
        Self::Notification(SaleToPoiRequest {
            header: MessageHeader {
                protocol_version: Some("3.0".into()),
                message_class: MessageClass::Event,
                message_category: MessageCategory::Event,
                message_type: MessageType::Notification,
                service_id: header.and_then(|h| h.service_id.clone()),
                device_id: None,
                sale_id: header.and_then(|h| h.sale_id.clone()),
                poi_id: poi_id.to_owned(),
            },
            body: RequestBody::Event(EventNotification {
                time_stamp: timestamp(now),
                event_to_notify: EventToNotify::Reject,
                event_details: Some(additional_response(&[("message", reason)])),
                rejected_message: Some(B64.encode(echoed)),
                maintenance_required_flag: None,
                display_output: None,
            }),
        })
    }
}

/// `now` as a nexo `TimeStamp` (RFC 3339).
pub fn timestamp(now: OffsetDateTime) -> String {
    now.format(&Rfc3339)
        .expect("RFC 3339 formats every OffsetDateTime with a four-digit year")
}

impl InboundError {
    /// The header read before the failure, if any.
    pub fn header(&self) -> Option<&MessageHeader> {
        match self {
            Self::Malformed { header, .. } => Some(header),
            Self::Security { header, .. } => header.as_deref(),
            Self::TooLarge(_) | Self::Unreadable { .. } => None,
        }
    }

    /// The answer of terminal `poi_id` to the `received` message that
    /// failed with this error, at `now`.
    pub fn reply(&self, poi_id: &str, received: &[u8], now: OffsetDateTime) -> Reply {
        let reason = self.to_string();
        match self {
            Self::Malformed { header, .. } => Reply::failure(
                header,
                ErrorCondition::MessageFormat,
                &reason,
                received,
                now,
            ),
            _ => Reply::reject(self.header(), poi_id, &reason, received, now),
        }
    }
}

/// Reads a `SaleToPOIRequest` (a cash register's request, or a
/// terminal's notification on a phone).
pub fn parse_request(
    body: &[u8],
    security: Security<'_>,
) -> Result<Inbound<SaleToPoiRequest>, InboundError> {
    let (header, body, secured) = parse::<RequestBody>(body, security)?;
    Ok(Inbound {
        message: SaleToPoiRequest { header, body },
        secured,
    })
}

/// Reads a `SaleToPOIResponse` (on the phone or cash register side).
pub fn parse_response(
    body: &[u8],
    security: Security<'_>,
) -> Result<Inbound<SaleToPoiResponse>, InboundError> {
    let (header, body, secured) = parse::<ResponseBody>(body, security)?;
    Ok(Inbound {
        message: SaleToPoiResponse { header, body },
        secured,
    })
}

/// A message body kind: what the root is called, which members are bodies
/// and how they read.
trait Body: Sized {
    const ROOT: &'static str;
    fn category_of(member: &str) -> Option<MessageCategory>;
    fn category(&self) -> MessageCategory;
    fn expected_type(category: MessageCategory) -> MessageType;
    fn read<'de, A: MapAccess<'de>>(
        category: MessageCategory,
        map: &mut A,
    ) -> Result<Self, A::Error>;
}

impl Body for RequestBody {
    const ROOT: &'static str = REQUEST_ROOT;

    fn category_of(member: &str) -> Option<MessageCategory> {
        MessageCategory::from_request_member(member)
    }

    fn category(&self) -> MessageCategory {
        RequestBody::category(self)
    }

    fn expected_type(category: MessageCategory) -> MessageType {
        match category {
            MessageCategory::Event => MessageType::Notification,
            _ => MessageType::Request,
        }
    }

    fn read<'de, A: MapAccess<'de>>(
        category: MessageCategory,
        map: &mut A,
    ) -> Result<Self, A::Error> {
        Ok(match category {
            MessageCategory::Payment => Self::Payment(map.next_value()?),
            MessageCategory::Reversal => Self::Reversal(map.next_value()?),
            MessageCategory::TransactionStatus => Self::TransactionStatus(map.next_value()?),
            MessageCategory::Abort => Self::Abort(map.next_value()?),
            MessageCategory::Login => Self::Login(map.next_value()?),
            MessageCategory::Logout => Self::Logout(map.next_value()?),
            MessageCategory::Diagnosis => Self::Diagnosis(map.next_value()?),
            MessageCategory::Display => Self::Display(map.next_value()?),
            MessageCategory::Event => Self::Event(map.next_value()?),
            category => Self::Unsupported {
                category,
                body: Verbatim(map.next_value()?),
            },
        })
    }
}

/// The `Response` of a response body posnet does not model.
#[derive(Deserialize)]
struct BareBody {
    #[serde(rename = "Response")]
    response: Response,
}

impl Body for ResponseBody {
    const ROOT: &'static str = RESPONSE_ROOT;

    fn category_of(member: &str) -> Option<MessageCategory> {
        MessageCategory::from_response_member(member)
    }

    fn category(&self) -> MessageCategory {
        ResponseBody::category(self)
    }

    fn expected_type(_: MessageCategory) -> MessageType {
        MessageType::Response
    }

    fn read<'de, A: MapAccess<'de>>(
        category: MessageCategory,
        map: &mut A,
    ) -> Result<Self, A::Error> {
        Ok(match category {
            MessageCategory::Payment => Self::Payment(map.next_value()?),
            MessageCategory::Reversal => Self::Reversal(map.next_value()?),
            MessageCategory::TransactionStatus => Self::TransactionStatus(map.next_value()?),
            MessageCategory::Login => Self::Login(map.next_value()?),
            MessageCategory::Logout => Self::Logout(map.next_value()?),
            MessageCategory::Diagnosis => Self::Diagnosis(map.next_value()?),
            category => {
                let bare: BareBody = map.next_value()?;
                Self::Other(OtherResponse::new(category, bare.response))
            }
        })
    }
}

/// What a read has seen so far; survives a failed read so that the
/// header, when it was read before the failure, can still address the
/// answer.
#[derive(Default)]
struct Seen {
    header: Option<MessageHeader>,
    secured: bool,
}

/// Reading the whole message, or only the header (after a failed whole
/// read, to find a header that comes after the failure).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Whole,
    HeaderOnly,
}

/// Reads `{ROOT: {...}}`, ignoring other top-level members.
struct RootSeed<'s, B> {
    seen: &'s mut Seen,
    mode: Mode,
    body: PhantomData<B>,
}

impl<'de, B: Body> DeserializeSeed<'de> for RootSeed<'_, B> {
    type Value = Option<B>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<B>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, B: Body> Visitor<'de> for RootSeed<'_, B> {
    type Value = Option<B>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with a {} member", B::ROOT)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<B>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == B::ROOT {
                if found.is_some() {
                    return Err(A::Error::custom(format_args!("duplicate {}", B::ROOT)));
                }
                found = Some(map.next_value_seed(InnerSeed::<B> {
                    seen: &mut *self.seen,
                    mode: self.mode,
                    body: PhantomData,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        found.ok_or_else(|| A::Error::custom(format_args!("no {} member", B::ROOT)))
    }
}

/// Reads the root's object: `MessageHeader`, one body member, or the
/// members of a secured envelope.
struct InnerSeed<'s, B> {
    seen: &'s mut Seen,
    mode: Mode,
    body: PhantomData<B>,
}

impl<'de, B: Body> DeserializeSeed<'de> for InnerSeed<'_, B> {
    type Value = Option<B>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<B>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, B: Body> Visitor<'de> for InnerSeed<'_, B> {
    type Value = Option<B>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} object", B::ROOT)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<B>, A::Error> {
        let mut body: Option<B> = None;
        let mut has_header = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "MessageHeader" => {
                    if has_header {
                        return Err(A::Error::custom("duplicate MessageHeader"));
                    }
                    self.seen.header = Some(map.next_value()?);
                    has_header = true;
                }
                "NexoBlob" | "SecurityTrailer" => {
                    self.seen.secured = true;
                    map.next_value::<IgnoredAny>()?;
                }
                member => match B::category_of(member) {
                    Some(category) if self.mode == Mode::Whole => {
                        if let Some(first) = &body {
                            return Err(A::Error::custom(format_args!(
                                "two bodies, {} and {member}",
                                first.category()
                            )));
                        }
                        body = Some(B::read(category, &mut map)?);
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        if !has_header {
            return Err(A::Error::missing_field("MessageHeader"));
        }
        Ok(body)
    }
}

/// Reads a plain message's JSON in `mode`; the header seen is in `seen`
/// also when the read fails.
fn read_json<B: Body>(
    json: &[u8],
    mode: Mode,
    seen: &mut Seen,
) -> Result<Option<B>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let body = RootSeed::<B> {
        seen,
        mode,
        body: PhantomData,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(body)
}

/// The byte offset of serde_json's (1-based) line and column in `json`:
/// the byte at which the error was seen.
fn offset_of(json: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = json
        .split(|b| *b == b'\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    (line_start + column.saturating_sub(1)).min(json.len())
}

/// A read of `json` that failed with `error`: malformed when a header can
/// be found (before the failure, or anywhere in syntactically valid JSON),
/// unreadable otherwise.
fn read_failure<B: Body>(json: &[u8], error: &serde_json::Error, seen: Seen) -> InboundError {
    let mut header = seen.header;
    if header.is_none() && error.classify() == serde_json::error::Category::Data {
        let mut again = Seen::default();
        // The whole text is JSON (the failure was about its content): the
        // header may come after the member that failed.
        let _ = read_json::<B>(json, Mode::HeaderOnly, &mut again);
        header = again.header;
    }
    match header {
        Some(header) => InboundError::Malformed {
            header: Box::new(header),
            reason: error.to_string(),
        },
        None => InboundError::Unreadable {
            offset: if error.is_eof() {
                json.len()
            } else {
                offset_of(json, error.line(), error.column())
            },
            line: error.line(),
            column: error.column(),
            reason: error.to_string(),
        },
    }
}

/// Reads a plain message and checks that its header matches its body.
fn read_plain<B: Body>(json: &[u8]) -> Result<(MessageHeader, Option<B>, bool), InboundError> {
    let mut seen = Seen::default();
    match read_json::<B>(json, Mode::Whole, &mut seen) {
        Ok(body) => {
            let header = seen.header.expect("a successful read has a header");
            Ok((header, body, seen.secured))
        }
        Err(e) => Err(read_failure::<B>(json, &e, seen)),
    }
}

fn check_body<B: Body>(
    header: MessageHeader,
    body: Option<B>,
) -> Result<(MessageHeader, B), InboundError> {
    let malformed = |header: MessageHeader, reason: String| InboundError::Malformed {
        header: Box::new(header),
        reason,
    };
    let Some(body) = body else {
        return Err(malformed(header, format!("{} has no body", B::ROOT)));
    };
    let category = body.category();
    if header.message_category != category {
        let reason = format!(
            "MessageCategory {} does not match the {} body",
            header.message_category, category
        );
        return Err(malformed(header, reason));
    }
    let expected = B::expected_type(category);
    if header.message_type != expected {
        let reason = format!(
            "MessageType {} where {expected} was expected",
            header.message_type
        );
        return Err(malformed(header, reason));
    }
    Ok((header, body))
}

fn parse<B: Body>(
    received: &[u8],
    security: Security<'_>,
) -> Result<(MessageHeader, B, bool), InboundError> {
    if received.len() > MAX_MESSAGE_LEN {
        return Err(InboundError::TooLarge(received.len()));
    }
    let (header, body, secured) = read_plain::<B>(received)?;
    let key = match (secured, security) {
        (false, Security::Required(_)) => {
            return Err(InboundError::Security {
                header: Some(Box::new(header)),
                reason: SecurityFault::Unsecured,
            });
        }
        (false, _) => {
            let (header, body) = check_body(header, body)?;
            return Ok((header, body, false));
        }
        (true, Security::Plain) => {
            return Err(InboundError::Security {
                header: Some(Box::new(header)),
                reason: SecurityFault::NoKey,
            });
        }
        (true, Security::Optional(key) | Security::Required(key)) => key,
    };
    let plaintext = match paycrypto::nexo::decrypt(key, received) {
        Ok(p) => p,
        Err(e) => {
            return Err(InboundError::Security {
                header: Some(Box::new(header)),
                reason: e.into(),
            });
        }
    };
    // The sender is authenticated from here on: a malformed plaintext is
    // answered with the envelope's header when its own cannot be read.
    let (inner_header, body, nested) = match read_plain::<B>(plaintext.as_bytes()) {
        Ok(read) => read,
        Err(InboundError::Unreadable { reason, offset, .. }) => {
            return Err(InboundError::Malformed {
                header: Box::new(header),
                reason: format!("decrypted message unreadable at byte {offset}: {reason}"),
            });
        }
        Err(e) => return Err(e),
    };
    if nested {
        return Err(InboundError::Malformed {
            header: Box::new(inner_header),
            reason: "decrypted message is itself secured".into(),
        });
    }
    let (header, body) = check_body(inner_header, body)?;
    Ok((header, body, true))
}

/// A request posnet will not serve, with the condition and reason to
/// answer it with ([`Refusal::reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{condition}: {reason}")]
pub struct Refusal {
    /// `ErrorCondition` of the answer.
    pub condition: ErrorCondition,
    /// Why, for `AdditionalResponse`.
    pub reason: String,
}

impl Refusal {
    /// The answer to `request`, at `now`.
    pub fn reply(&self, request: &SaleToPoiRequest, now: OffsetDateTime) -> Reply {
        Reply::failure(
            &request.header,
            self.condition,
            &self.reason,
            request.to_json().as_bytes(),
            now,
        )
    }
}

/// Checks that posnet serves what `request` asks for: a Sale system's
/// request posnet implements, a payment of type `Normal` or `Refund` with
/// a `RequestedAmount` its currency can hold. Notifications and device
/// requests travel from the terminal, never to it.
pub fn screen(request: &SaleToPoiRequest) -> Result<(), Refusal> {
    let not_allowed = |reason: String| Refusal {
        condition: ErrorCondition::NotAllowed,
        reason,
    };
    match &request.body {
        RequestBody::Unsupported { category, .. } => Err(not_allowed(format!(
            "{} is not supported by this terminal",
            category.request_member()
        ))),
        RequestBody::Display(_) | RequestBody::Event(_) => Err(not_allowed(format!(
            "{} is sent by the terminal, not to it",
            request.body.category().request_member()
        ))),
        RequestBody::Payment(payment) => {
            let payment_type = payment.payment_type();
            if !matches!(payment_type, PaymentType::Normal | PaymentType::Refund) {
                return Err(not_allowed(format!(
                    "PaymentType {payment_type} is not supported by this terminal"
                )));
            }
            requested_minor(payment).map(drop)
        }
        _ => Ok(()),
    }
}

/// The payment's `RequestedAmount` in minor units, or the refusal of an
/// amount that is missing or does not fit its currency.
pub fn requested_minor(payment: &PaymentRequest) -> Result<u64, Refusal> {
    payment
        .payment_transaction
        .amounts_req
        .requested_minor()
        .map_err(|e: AmountError| Refusal {
            condition: ErrorCondition::MessageFormat,
            reason: e.to_string(),
        })
}

/// Refuses a payment over the terminal's limit of `limit_minor` minor
/// units (`Refusal`, with the amount and the limit in the reason);
/// returns the requested amount in minor units otherwise.
pub fn check_limit(payment: &PaymentRequest, limit_minor: u64) -> Result<u64, Refusal> {
    let requested = requested_minor(payment)?;
    if requested > limit_minor {
        let currency = &payment.payment_transaction.amounts_req.currency;
        // The currency was just read with its exponent: it converts.
        let major = |minor| {
            Amount::from_minor(minor, currency)
                .expect("a currency that converted to minor units converts back")
        };
        let (amount, limit) = (major(requested), major(limit_minor));
        return Err(Refusal {
            condition: ErrorCondition::Refusal,
            reason: format!(
                "amount {amount} {currency} exceeds the terminal limit of {limit} {currency}"
            ),
        });
    }
    Ok(requested)
}
