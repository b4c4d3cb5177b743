//! The message bodies posnet speaks, field for field as Adyen's Terminal
//! API models name them. Only the fields posnet reads or writes are
//! modelled; any other field a Sale system sends is accepted and ignored.
//! Optional fields are left out of the JSON when absent, lists when empty.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::amount::{Amount, AmountError};
use crate::wire::{
    Alignment, CharacterStyle, DeviceType, DocumentQualifier, EntryMode, ErrorCondition,
    EventToNotify, GlobalStatus, InfoQualify, MessageCategory, MessageClass, MessageType,
    OutputFormat, PaymentInstrumentType, PaymentType, PoiCapability, PrinterStatus, ResultType,
    ReversalReason, SaleCapability, TerminalEnvironment,
};

/// `MessageHeader`: who speaks to whom about what.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageHeader {
    /// `ProtocolVersion` (`3.0`).
    pub protocol_version: Option<String>,
    /// `MessageClass`.
    pub message_class: MessageClass,
    /// `MessageCategory`.
    pub message_category: MessageCategory,
    /// `MessageType`.
    pub message_type: MessageType,
    /// `ServiceID`: the Sale system's identifier of this exchange.
    #[serde(rename = "ServiceID")]
    pub service_id: Option<String>,
    /// `DeviceID`: the device of a device request.
    #[serde(rename = "DeviceID")]
    pub device_id: Option<String>,
    /// `SaleID`: the Sale system (cash register, phone).
    #[serde(rename = "SaleID")]
    pub sale_id: Option<String>,
    /// `POIID`: the terminal.
    #[serde(rename = "POIID")]
    pub poi_id: String,
}

impl MessageHeader {
    /// The header of the response to a request with this header: the same
    /// identifiers, `MessageType` `Response`.
    pub fn to_response(&self) -> Self {
        Self {
            message_type: MessageType::Response,
            ..self.clone()
        }
    }
}

/// `Response`: the outcome of a request.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    /// `Result`.
    pub result: ResultType,
    /// `ErrorCondition`, with a failure.
    pub error_condition: Option<ErrorCondition>,
    /// `AdditionalResponse`: URL-encoded `key=value` pairs saying more.
    pub additional_response: Option<String>,
}

impl Response {
    /// A success.
    pub fn success() -> Self {
        Self {
            result: ResultType::Success,
            error_condition: None,
            additional_response: None,
        }
    }

    /// A failure with its condition and a human-readable reason, sent as
    /// `AdditionalResponse` `message=<reason>` (URL-encoded, as Adyen's
    /// terminals write it).
    pub fn failure(condition: ErrorCondition, reason: &str) -> Self {
        Self {
            result: ResultType::Failure,
            error_condition: Some(condition),
            additional_response: Some(additional_response(&[("message", reason)])),
        }
    }
}

/// URL-encodes `key=value` pairs for `AdditionalResponse` or
/// `EventDetails`.
pub fn additional_response(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `TransactionIdentification`: a transaction's identifier and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransactionIdentification {
    /// `TransactionID`.
    #[serde(rename = "TransactionID")]
    pub transaction_id: String,
    /// `TimeStamp` (ISO 8601).
    pub time_stamp: String,
}

/// `SaleData`: the Sale system's side of a transaction.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SaleData {
    /// `SaleTransactionID`.
    #[serde(rename = "SaleTransactionID")]
    pub sale_transaction_id: TransactionIdentification,
    /// `SaleReferenceID`: groups transactions of one sale.
    #[serde(rename = "SaleReferenceID")]
    pub sale_reference_id: Option<String>,
    /// `OperatorID`: the cashier.
    #[serde(rename = "OperatorID")]
    pub operator_id: Option<String>,
    /// `OperatorLanguage`.
    pub operator_language: Option<String>,
    /// `ShiftNumber`.
    pub shift_number: Option<String>,
    /// `SaleToAcquirerData` (text or base64 JSON, passed through).
    pub sale_to_acquirer_data: Option<String>,
}

/// `AmountsReq`: the amounts asked for.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AmountsReq {
    /// `Currency` (ISO 4217 alphabetic).
    pub currency: String,
    /// `RequestedAmount`.
    pub requested_amount: Option<Amount>,
    /// `TipAmount`.
    pub tip_amount: Option<Amount>,
    /// `CashBackAmount`.
    pub cash_back_amount: Option<Amount>,
}

impl AmountsReq {
    /// `RequestedAmount` in minor units of `Currency`; a missing amount is
    /// an error of the message.
    pub fn requested_minor(&self) -> Result<u64, AmountError> {
        self.requested_amount
            .ok_or_else(|| AmountError::NotANumber("no RequestedAmount".into()))?
            .to_minor(&self.currency)
    }
}

/// `OriginalPOITransaction`: the transaction a request refers to.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OriginalPoiTransaction {
    /// `SaleID` of the original transaction.
    #[serde(rename = "SaleID")]
    pub sale_id: Option<String>,
    /// `POIID` of the original transaction.
    #[serde(rename = "POIID")]
    pub poi_id: Option<String>,
    /// `POITransactionID` of the original transaction.
    #[serde(rename = "POITransactionID")]
    pub poi_transaction_id: Option<TransactionIdentification>,
    /// `ApprovalCode` of the original transaction.
    pub approval_code: Option<String>,
}

/// `PaymentTransaction`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentTransaction {
    /// `AmountsReq`.
    pub amounts_req: AmountsReq,
    /// `OriginalPOITransaction`, for a refund of a known payment.
    #[serde(rename = "OriginalPOITransaction")]
    pub original_poi_transaction: Option<OriginalPoiTransaction>,
}

/// `PaymentData`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentData {
    /// `PaymentType` (`Normal` when absent).
    pub payment_type: Option<PaymentType>,
}

/// `PaymentRequest`: a sale or a refund.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentRequest {
    /// `SaleData`.
    pub sale_data: SaleData,
    /// `PaymentTransaction`.
    pub payment_transaction: PaymentTransaction,
    /// `PaymentData`.
    pub payment_data: Option<PaymentData>,
}

impl PaymentRequest {
    /// The payment type, `Normal` when the request names none.
    pub fn payment_type(&self) -> PaymentType {
        self.payment_data
            .as_ref()
            .and_then(|d| d.payment_type)
            .unwrap_or(PaymentType::Normal)
    }
}

/// `POIData`: the terminal's side of a transaction.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoiData {
    /// `POITransactionID`.
    #[serde(rename = "POITransactionID")]
    pub poi_transaction_id: TransactionIdentification,
    /// `POIReconciliationID`: the batch.
    #[serde(rename = "POIReconciliationID")]
    pub poi_reconciliation_id: Option<String>,
}

/// `AmountsResp`: the amounts authorized.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AmountsResp {
    /// `Currency`.
    pub currency: Option<String>,
    /// `AuthorizedAmount`.
    pub authorized_amount: Amount,
    /// `TipAmount`.
    pub tip_amount: Option<Amount>,
    /// `CashBackAmount`.
    pub cash_back_amount: Option<Amount>,
}

/// `PaymentAcquirerData`: the host's side of a transaction.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentAcquirerData {
    /// `AcquirerID`.
    #[serde(rename = "AcquirerID")]
    pub acquirer_id: Option<String>,
    /// `MerchantID`.
    #[serde(rename = "MerchantID")]
    pub merchant_id: String,
    /// `AcquirerPOIID`: the terminal's identifier at the host.
    #[serde(rename = "AcquirerPOIID")]
    pub acquirer_poi_id: String,
    /// `AcquirerTransactionID`: the host's reference.
    #[serde(rename = "AcquirerTransactionID")]
    pub acquirer_transaction_id: Option<TransactionIdentification>,
    /// `ApprovalCode`.
    pub approval_code: Option<String>,
}

/// `CardData`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CardData {
    /// `PaymentBrand` (`visa`, `mc`, a closed-loop brand).
    pub payment_brand: Option<String>,
    /// `MaskedPan`: never more than the first six and last four digits.
    pub masked_pan: Option<String>,
    /// `EntryMode`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_mode: Vec<EntryMode>,
}

/// `PaymentInstrumentData`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentInstrumentData {
    /// `PaymentInstrumentType`.
    pub payment_instrument_type: PaymentInstrumentType,
    /// `CardData`.
    pub card_data: Option<CardData>,
}

/// `PaymentResult`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentResult {
    /// `PaymentType`.
    pub payment_type: Option<PaymentType>,
    /// `PaymentInstrumentData`.
    pub payment_instrument_data: Option<PaymentInstrumentData>,
    /// `AmountsResp`.
    pub amounts_resp: Option<AmountsResp>,
    /// `OnlineFlag`: authorized online (false: offline under the floor limit).
    pub online_flag: Option<bool>,
    /// `PaymentAcquirerData`.
    pub payment_acquirer_data: Option<PaymentAcquirerData>,
}

/// `OutputText`: one line of text.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OutputText {
    /// `Text`.
    pub text: Option<String>,
    /// `EndOfLineFlag`.
    pub end_of_line_flag: Option<bool>,
    /// `Alignment`.
    pub alignment: Option<Alignment>,
    /// `CharacterStyle`.
    pub character_style: Option<CharacterStyle>,
}

impl OutputText {
    /// A whole line of text.
    pub fn line(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            end_of_line_flag: Some(true),
            ..Self::default()
        }
    }
}

/// `PredefinedContent`: a message known to both sides by reference.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PredefinedContent {
    /// `ReferenceID`.
    #[serde(rename = "ReferenceID")]
    pub reference_id: String,
    /// `Language`.
    pub language: Option<String>,
}

/// `OutputContent`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OutputContent {
    /// `OutputFormat`.
    pub output_format: OutputFormat,
    /// `PredefinedContent`, with format `MessageRef`.
    pub predefined_content: Option<PredefinedContent>,
    /// `OutputText`, with format `Text`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_text: Vec<OutputText>,
}

impl OutputContent {
    /// Text content of these lines.
    pub fn text<I: IntoIterator<Item = S>, S: Into<String>>(lines: I) -> Self {
        Self {
            output_format: OutputFormat::Text,
            predefined_content: None,
            output_text: lines.into_iter().map(OutputText::line).collect(),
        }
    }
}

/// `PaymentReceipt`: one receipt of a transaction.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentReceipt {
    /// `DocumentQualifier`.
    pub document_qualifier: DocumentQualifier,
    /// `RequiredSignatureFlag`.
    pub required_signature_flag: Option<bool>,
    /// `OutputContent`.
    pub output_content: OutputContent,
}

/// `PaymentResponse`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentResponse {
    /// `Response`.
    pub response: Response,
    /// `SaleData`, echoed from the request (absent only when the request
    /// could not be read).
    pub sale_data: Option<SaleData>,
    /// `POIData` (absent only when no transaction was started).
    #[serde(rename = "POIData")]
    pub poi_data: Option<PoiData>,
    /// `PaymentResult`.
    pub payment_result: Option<PaymentResult>,
    /// `PaymentReceipt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payment_receipt: Vec<PaymentReceipt>,
}

/// `MessageReference`: the exchange a request refers to.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageReference {
    /// `MessageCategory` of the referred exchange.
    pub message_category: Option<MessageCategory>,
    /// `ServiceID` of the referred exchange.
    #[serde(rename = "ServiceID")]
    pub service_id: Option<String>,
    /// `DeviceID` of the referred exchange.
    #[serde(rename = "DeviceID")]
    pub device_id: Option<String>,
    /// `SaleID` of the referred exchange.
    #[serde(rename = "SaleID")]
    pub sale_id: Option<String>,
    /// `POIID` of the referred exchange.
    #[serde(rename = "POIID")]
    pub poi_id: Option<String>,
}

/// `TransactionStatusRequest`: what became of an earlier request.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransactionStatusRequest {
    /// `MessageReference` (the last payment when absent).
    pub message_reference: Option<MessageReference>,
    /// `ReceiptReprintFlag`.
    pub receipt_reprint_flag: Option<bool>,
    /// `DocumentQualifier`: which receipts to repeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub document_qualifier: Vec<DocumentQualifier>,
}

/// `RepeatedResponseMessageBody`: the original response.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RepeatedResponseMessageBody {
    /// `PaymentResponse`.
    pub payment_response: Option<PaymentResponse>,
    /// `ReversalResponse`.
    pub reversal_response: Option<ReversalResponse>,
}

/// `RepeatedMessageResponse`: an earlier response, repeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RepeatedMessageResponse {
    /// `MessageHeader` of the original response.
    pub message_header: MessageHeader,
    /// `RepeatedResponseMessageBody`.
    pub repeated_response_message_body: RepeatedResponseMessageBody,
}

/// `TransactionStatusResponse`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransactionStatusResponse {
    /// `Response`: `Success` with the original response, `Failure` with
    /// `InProgress` or `NotFound`.
    pub response: Response,
    /// `MessageReference` of the exchange reported on.
    pub message_reference: Option<MessageReference>,
    /// `RepeatedMessageResponse`: the original response (boxed: it holds
    /// whole response bodies).
    pub repeated_message_response: Option<Box<RepeatedMessageResponse>>,
}

/// `DisplayOutput`: something to show on a device.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DisplayOutput {
    /// `Device`.
    pub device: DeviceType,
    /// `InfoQualify`.
    pub info_qualify: InfoQualify,
    /// `ResponseRequiredFlag`.
    pub response_required_flag: Option<bool>,
    /// `MinimumDisplayTime` in seconds.
    pub minimum_display_time: Option<u32>,
    /// `OutputContent`.
    pub output_content: OutputContent,
}

/// `AbortRequest`: stop a request in progress.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AbortRequest {
    /// `AbortReason` (free text, e.g. `MerchantAbort`).
    pub abort_reason: String,
    /// `MessageReference`: the request to abort.
    pub message_reference: MessageReference,
    /// `DisplayOutput`: what to show the customer.
    pub display_output: Option<DisplayOutput>,
}

/// `ReversalRequest`: undo a payment.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReversalRequest {
    /// `OriginalPOITransaction`: the payment to reverse.
    #[serde(rename = "OriginalPOITransaction")]
    pub original_poi_transaction: OriginalPoiTransaction,
    /// `ReversalReason`.
    pub reversal_reason: ReversalReason,
    /// `ReversedAmount` (the whole payment when absent).
    pub reversed_amount: Option<Amount>,
    /// `SaleData`.
    pub sale_data: Option<SaleData>,
}

/// `ReversalResponse`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReversalResponse {
    /// `Response`.
    pub response: Response,
    /// `POIData` of the reversal.
    #[serde(rename = "POIData")]
    pub poi_data: Option<PoiData>,
    /// `OriginalPOITransaction`.
    #[serde(rename = "OriginalPOITransaction")]
    pub original_poi_transaction: Option<OriginalPoiTransaction>,
    /// `ReversedAmount`.
    pub reversed_amount: Option<Amount>,
    /// `PaymentReceipt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payment_receipt: Vec<PaymentReceipt>,
}

/// `SaleSoftware`: the Sale system's software.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SaleSoftware {
    /// `ManufacturerID`.
    #[serde(rename = "ManufacturerID")]
    pub manufacturer_id: Option<String>,
    /// `ApplicationName`.
    pub application_name: String,
    /// `SoftwareVersion`.
    pub software_version: String,
    /// `CertificationCode`.
    pub certification_code: String,
}

/// `SaleTerminalData`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SaleTerminalData {
    /// `TerminalEnvironment`.
    pub terminal_environment: Option<TerminalEnvironment>,
    /// `SaleCapabilities`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sale_capabilities: Vec<SaleCapability>,
    /// `TotalsGroupID`.
    #[serde(rename = "TotalsGroupID")]
    pub totals_group_id: Option<String>,
}

/// `LoginRequest`: a Sale system starts a session with the terminal.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoginRequest {
    /// `DateTime` (ISO 8601) of the Sale system.
    pub date_time: String,
    /// `SaleSoftware`.
    pub sale_software: SaleSoftware,
    /// `SaleTerminalData`.
    pub sale_terminal_data: Option<SaleTerminalData>,
    /// `TrainingModeFlag`.
    pub training_mode_flag: Option<bool>,
    /// `OperatorLanguage`.
    pub operator_language: String,
    /// `OperatorID`.
    #[serde(rename = "OperatorID")]
    pub operator_id: Option<String>,
    /// `ShiftNumber`.
    pub shift_number: Option<String>,
    /// `POISerialNumber`: the terminal the Sale system expects.
    #[serde(rename = "POISerialNumber")]
    pub poi_serial_number: Option<String>,
}

/// `POISoftware`: the terminal's software.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoiSoftware {
    /// `ManufacturerID`.
    #[serde(rename = "ManufacturerID")]
    pub manufacturer_id: String,
    /// `ApplicationName`.
    pub application_name: String,
    /// `SoftwareVersion`.
    pub software_version: String,
    /// `CertificationCode`.
    pub certification_code: String,
}

/// `POITerminalData`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoiTerminalData {
    /// `TerminalEnvironment`.
    pub terminal_environment: TerminalEnvironment,
    /// `POICapabilities`.
    #[serde(rename = "POICapabilities")]
    pub poi_capabilities: Vec<PoiCapability>,
    /// `POISerialNumber`.
    #[serde(rename = "POISerialNumber")]
    pub poi_serial_number: String,
}

/// `POIStatus`: the terminal's health.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoiStatus {
    /// `GlobalStatus`.
    pub global_status: GlobalStatus,
    /// `SecurityOKFlag`: keys loaded and signed on.
    #[serde(rename = "SecurityOKFlag")]
    pub security_ok_flag: Option<bool>,
    /// `PEDOKFlag`: PIN pad working.
    #[serde(rename = "PEDOKFlag")]
    pub ped_ok_flag: Option<bool>,
    /// `CardReaderOKFlag`.
    #[serde(rename = "CardReaderOKFlag")]
    pub card_reader_ok_flag: Option<bool>,
    /// `PrinterStatus`.
    pub printer_status: Option<PrinterStatus>,
    /// `CommunicationOKFlag`: the host link is up.
    #[serde(rename = "CommunicationOKFlag")]
    pub communication_ok_flag: Option<bool>,
}

/// `POISystemData`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoiSystemData {
    /// `DateTime` (ISO 8601) of the terminal.
    pub date_time: String,
    /// `POISoftware`.
    #[serde(rename = "POISoftware")]
    pub poi_software: PoiSoftware,
    /// `POITerminalData`.
    #[serde(rename = "POITerminalData")]
    pub poi_terminal_data: Option<PoiTerminalData>,
    /// `POIStatus`.
    #[serde(rename = "POIStatus")]
    pub poi_status: Option<PoiStatus>,
}

/// `LoginResponse`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoginResponse {
    /// `Response`.
    pub response: Response,
    /// `POISystemData`.
    #[serde(rename = "POISystemData")]
    pub poi_system_data: Option<PoiSystemData>,
}

/// `LogoutRequest`: a Sale system ends its session.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogoutRequest {
    /// `MaintenanceAllowed`.
    pub maintenance_allowed: Option<bool>,
}

/// `LogoutResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogoutResponse {
    /// `Response`.
    pub response: Response,
}

/// `DiagnosisRequest`: how is the terminal, and can it reach its hosts?
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiagnosisRequest {
    /// `POIID` of the terminal asked about.
    #[serde(rename = "POIID")]
    pub poi_id: Option<String>,
    /// `HostDiagnosisFlag`: also check the hosts.
    pub host_diagnosis_flag: Option<bool>,
    /// `AcquirerID`: the hosts to check (all when empty).
    #[serde(rename = "AcquirerID", default, skip_serializing_if = "Vec::is_empty")]
    pub acquirer_id: Vec<String>,
}

/// `HostStatus`: can a host be reached?
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostStatus {
    /// `AcquirerID`.
    #[serde(rename = "AcquirerID")]
    pub acquirer_id: String,
    /// `IsReachableFlag`.
    pub is_reachable_flag: Option<bool>,
}

/// `DiagnosisResponse`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiagnosisResponse {
    /// `Response`; its `AdditionalResponse` carries what nexo has no field
    /// for (e.g. `pendingAdvices=2`).
    pub response: Response,
    /// `LoggedSaleID`: the Sale systems logged in.
    #[serde(
        rename = "LoggedSaleID",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub logged_sale_id: Vec<String>,
    /// `POIStatus`.
    #[serde(rename = "POIStatus")]
    pub poi_status: Option<PoiStatus>,
    /// `HostStatus`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_status: Vec<HostStatus>,
}

/// `DisplayRequest`: show something (the terminal's progress, pushed to a
/// phone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DisplayRequest {
    /// `DisplayOutput`.
    pub display_output: Vec<DisplayOutput>,
}

/// `EventNotification`: something happened at the terminal.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventNotification {
    /// `TimeStamp` (ISO 8601).
    pub time_stamp: String,
    /// `EventToNotify`.
    pub event_to_notify: EventToNotify,
    /// `EventDetails`: URL-encoded `key=value` pairs.
    pub event_details: Option<String>,
    /// `RejectedMessage`: base64 of the rejected message, with `Reject`.
    pub rejected_message: Option<String>,
    /// `MaintenanceRequiredFlag`.
    pub maintenance_required_flag: Option<bool>,
    /// `DisplayOutput`.
    pub display_output: Option<DisplayOutput>,
}
