//! Whole messages: `{"SaleToPOIRequest": {"MessageHeader": ..., "<X>Request":
//! ...}}` and `{"SaleToPOIResponse": ...}`, typed by their body.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::model::{
    AbortRequest, DiagnosisRequest, DiagnosisResponse, DisplayRequest, EventNotification,
    LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, MessageHeader, PaymentRequest,
    PaymentResponse, Response, ReversalRequest, ReversalResponse, TransactionStatusRequest,
    TransactionStatusResponse,
};
use crate::wire::MessageCategory;

/// Name of the root member of a request or notification.
pub const REQUEST_ROOT: &str = "SaleToPOIRequest";
/// Name of the root member of a response.
pub const RESPONSE_ROOT: &str = "SaleToPOIResponse";

/// The body of a `SaleToPOIRequest`.
// As for `ResponseBody`: one per exchange.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// `PaymentRequest`.
    Payment(PaymentRequest),
    /// `ReversalRequest`.
    Reversal(ReversalRequest),
    /// `TransactionStatusRequest`.
    TransactionStatus(TransactionStatusRequest),
    /// `AbortRequest`.
    Abort(AbortRequest),
    /// `LoginRequest`.
    Login(LoginRequest),
    /// `LogoutRequest`.
    Logout(LogoutRequest),
    /// `DiagnosisRequest`.
    Diagnosis(DiagnosisRequest),
    /// `DisplayRequest` (terminal to phone).
    Display(DisplayRequest),
    /// `EventNotification` (terminal to phone or cash register).
    Event(EventNotification),
    /// A request nexo defines and posnet does not serve, kept as received.
    Unsupported {
        /// Its category.
        category: MessageCategory,
        /// Its body, verbatim.
        body: Verbatim,
    },
}

/// A JSON value kept as received.
#[derive(Debug, Clone)]
pub struct Verbatim(pub Box<RawValue>);

impl Verbatim {
    /// The value's JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Verbatim {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for Verbatim {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl RequestBody {
    /// The category of this body.
    pub fn category(&self) -> MessageCategory {
        match self {
            Self::Payment(_) => MessageCategory::Payment,
            Self::Reversal(_) => MessageCategory::Reversal,
            Self::TransactionStatus(_) => MessageCategory::TransactionStatus,
            Self::Abort(_) => MessageCategory::Abort,
            Self::Login(_) => MessageCategory::Login,
            Self::Logout(_) => MessageCategory::Logout,
            Self::Diagnosis(_) => MessageCategory::Diagnosis,
            Self::Display(_) => MessageCategory::Display,
            Self::Event(_) => MessageCategory::Event,
            Self::Unsupported { category, .. } => *category,
        }
    }
}

/// The body of a `SaleToPOIResponse`.
// One body per exchange, built once and moved rarely: boxing the larger
// variants would cost every user a `Box::new` for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseBody {
    /// `PaymentResponse`.
    Payment(PaymentResponse),
    /// `ReversalResponse`.
    Reversal(ReversalResponse),
    /// `TransactionStatusResponse`.
    TransactionStatus(TransactionStatusResponse),
    /// `LoginResponse`.
    Login(LoginResponse),
    /// `LogoutResponse`.
    Logout(LogoutResponse),
    /// `DiagnosisResponse`.
    Diagnosis(DiagnosisResponse),
    /// The response to a category posnet does not serve: only its
    /// `Response` (how posnet refuses such requests).
    Other(OtherResponse),
}

/// A response body of a category posnet does not model: its `Response`
/// only. Built by [`ResponseBody::bare`], which checks that the category
/// has a response member.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherResponse {
    category: MessageCategory,
    /// `Response`.
    pub response: Response,
}

impl OtherResponse {
    /// `response` for `category`, which must have a response member.
    pub(crate) fn new(category: MessageCategory, response: Response) -> Self {
        assert!(
            category.response_member().is_some(),
            "{category} is answered by no response body"
        );
        Self { category, response }
    }

    /// The category answered.
    pub fn category(&self) -> MessageCategory {
        self.category
    }
}

impl ResponseBody {
    /// The category of this body.
    pub fn category(&self) -> MessageCategory {
        match self {
            Self::Payment(_) => MessageCategory::Payment,
            Self::Reversal(_) => MessageCategory::Reversal,
            Self::TransactionStatus(_) => MessageCategory::TransactionStatus,
            Self::Login(_) => MessageCategory::Login,
            Self::Logout(_) => MessageCategory::Logout,
            Self::Diagnosis(_) => MessageCategory::Diagnosis,
            Self::Other(o) => o.category,
        }
    }

    /// The `Response` of this body.
    pub fn response(&self) -> &Response {
        match self {
            Self::Payment(b) => &b.response,
            Self::Reversal(b) => &b.response,
            Self::TransactionStatus(b) => &b.response,
            Self::Login(b) => &b.response,
            Self::Logout(b) => &b.response,
            Self::Diagnosis(b) => &b.response,
            Self::Other(o) => &o.response,
        }
    }

    /// The body answering a request of `category` with nothing but
    /// `response` (a refusal, or a failure before anything was done), or
    /// `None` for the categories nexo answers otherwise (see
    /// [`MessageCategory::response_member`]).
    pub fn bare(category: MessageCategory, response: Response) -> Option<Self> {
        category.response_member()?;
        Some(match category {
            MessageCategory::Payment => Self::Payment(PaymentResponse {
                response,
                sale_data: None,
                poi_data: None,
                payment_result: None,
                payment_receipt: Vec::new(),
            }),
            MessageCategory::Reversal => Self::Reversal(ReversalResponse {
                response,
                poi_data: None,
                original_poi_transaction: None,
                reversed_amount: None,
                payment_receipt: Vec::new(),
            }),
            MessageCategory::TransactionStatus => {
                Self::TransactionStatus(TransactionStatusResponse {
                    response,
                    message_reference: None,
                    repeated_message_response: None,
                })
            }
            MessageCategory::Login => Self::Login(LoginResponse {
                response,
                poi_system_data: None,
            }),
            MessageCategory::Logout => Self::Logout(LogoutResponse { response }),
            MessageCategory::Diagnosis => Self::Diagnosis(DiagnosisResponse {
                response,
                logged_sale_id: Vec::new(),
                poi_status: None,
                host_status: Vec::new(),
            }),
            category => Self::Other(OtherResponse::new(category, response)),
        })
    }
}

/// A `SaleToPOIRequest`: a request of the Sale system, or a notification
/// or device request of the terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct SaleToPoiRequest {
    /// `MessageHeader`.
    pub header: MessageHeader,
    /// The body.
    pub body: RequestBody,
}

/// A `SaleToPOIResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct SaleToPoiResponse {
    /// `MessageHeader`.
    pub header: MessageHeader,
    /// The body.
    pub body: ResponseBody,
}

impl SaleToPoiResponse {
    /// The response to `request`'s header with `body`.
    pub fn answer(request: &MessageHeader, body: ResponseBody) -> Self {
        Self {
            header: request.to_response(),
            body,
        }
    }

    /// The failure answering a request with header `request`: its
    /// category's bare body with `Result` `Failure`, `condition` and
    /// `reason` in `AdditionalResponse`. `None` for a category nexo
    /// answers otherwise (see [`MessageCategory::response_member`]).
    pub fn failure(
        request: &MessageHeader,
        condition: crate::wire::ErrorCondition,
        reason: &str,
    ) -> Option<Self> {
        let response = Response::failure(condition, reason);
        ResponseBody::bare(request.message_category, response).map(|b| Self::answer(request, b))
    }
}

/// The plaintext JSON of a message, `{"SaleToPOIRequest": {...}}` or
/// `{"SaleToPOIResponse": {...}}`.
pub trait ToJson: Serialize {
    /// Serializes the message.
    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("nexo messages serialize: string keys, finite numbers")
    }
}

impl ToJson for SaleToPoiRequest {}
impl ToJson for SaleToPoiResponse {}

/// `{"MessageHeader": header, member: body}`.
struct Inner<'a, B: Serialize> {
    header: &'a MessageHeader,
    member: &'static str,
    body: &'a B,
}

impl<B: Serialize> Serialize for Inner<'_, B> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("MessageHeader", self.header)?;
        map.serialize_entry(self.member, self.body)?;
        map.end()
    }
}

fn serialize_root<S: Serializer, B: Serialize>(
    serializer: S,
    root: &'static str,
    header: &MessageHeader,
    member: &'static str,
    body: &B,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(1))?;
    map.serialize_entry(
        root,
        &Inner {
            header,
            member,
            body,
        },
    )?;
    map.end()
}

impl Serialize for SaleToPoiRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let member = self.body.category().request_member();
        let h = &self.header;
        match &self.body {
            RequestBody::Payment(b) => serialize_root(s, REQUEST_ROOT, h, member, b),
            RequestBody::Reversal(b) => serialize_root(s, REQUEST_ROOT, h, member, b),
            RequestBody::TransactionStatus(b) => serialize_root(s, REQUEST_ROOT, h, member, b),
            RequestBody::Abort(b) => serialize_root(s, REQUEST_ROOT, h, member, b),
            RequestBody::Login(b) => serialize_root(s, REQUEST_ROOT, h, member, b),
            RequestBody::Logout(b) => serialize_root(s, REQUEST_ROOT, h, member, b),
            RequestBody::Diagnosis(b) => serialize_root(s, REQUEST_ROOT, h, member, b),
            RequestBody::Display(b) => serialize_root(s, REQUEST_ROOT, h, member, b),
            RequestBody::Event(b) => serialize_root(s, REQUEST_ROOT, h, member, b),
            RequestBody::Unsupported { body, .. } => {
                serialize_root(s, REQUEST_ROOT, h, member, body)
            }
        }
    }
}

/// `{"Response": ...}`: the body of a response posnet does not model.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BareBody<'a> {
    response: &'a Response,
}

impl Serialize for SaleToPoiResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let member = self
            .body
            .category()
            .response_member()
            .expect("response bodies exist only for categories with a response member");
        let h = &self.header;
        match &self.body {
            ResponseBody::Payment(b) => serialize_root(s, RESPONSE_ROOT, h, member, b),
            ResponseBody::Reversal(b) => serialize_root(s, RESPONSE_ROOT, h, member, b),
            ResponseBody::TransactionStatus(b) => serialize_root(s, RESPONSE_ROOT, h, member, b),
            ResponseBody::Login(b) => serialize_root(s, RESPONSE_ROOT, h, member, b),
            ResponseBody::Logout(b) => serialize_root(s, RESPONSE_ROOT, h, member, b),
            ResponseBody::Diagnosis(b) => serialize_root(s, RESPONSE_ROOT, h, member, b),
            ResponseBody::Other(o) => serialize_root(
                s,
                RESPONSE_ROOT,
                h,
                member,
                &BareBody {
                    response: &o.response,
                },
            ),
        }
    }
}
