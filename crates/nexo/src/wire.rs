//! The enumerations of the nexo Sale-to-POI JSON, with their wire strings
//! exactly as Adyen's Terminal API models spell them (`ICC`, `PIN`,
//! `WrongPIN`, `POIReplication`, ...). Each enumeration lists every value of
//! its model, also those posnet does not act on, so that a message carrying
//! them parses and is refused for what it asks rather than for its syntax.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Defines a closed enumeration serialized as its wire string.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in the order of the model.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The value as it travels in the JSON.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire),+
                }
            }

            /// The value for a wire string, if it is one of this enumeration's.
            pub fn from_wire(s: &str) -> Option<Self> {
                match s {
                    $($wire => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct WireVisitor;
                impl Visitor<'_> for WireVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {} string", stringify!($name))
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::from_wire(s).ok_or_else(|| {
                            E::invalid_value(de::Unexpected::Str(s), &self)
                        })
                    }
                }
                deserializer.deserialize_str(WireVisitor)
            }
        }
    };
}

wire_enum! {
    /// `MessageClass`: what kind of exchange a message belongs to.
    MessageClass {
        /// A device request of the POI (display, input, print).
        Device = "Device",
        /// An event notification.
        Event = "Event",
        /// A service request of the Sale system (payment, login, ...).
        Service = "Service",
    }
}

wire_enum! {
    /// `MessageType`: request, response or notification.
    MessageType {
        /// A notification, answered by no response.
        Notification = "Notification",
        /// A request.
        Request = "Request",
        /// A response to a request.
        Response = "Response",
    }
}

wire_enum! {
    /// `MessageCategory`: which service or device function a message is.
    MessageCategory {
        /// Abort of a request in progress.
        Abort = "Abort",
        /// Administrative request.
        Admin = "Admin",
        /// Balance inquiry.
        BalanceInquiry = "BalanceInquiry",
        /// Batch of transactions.
        Batch = "Batch",
        /// Card acquisition before a payment.
        CardAcquisition = "CardAcquisition",
        /// APDU to a card reader.
        CardReaderApdu = "CardReaderAPDU",
        /// Card reader initialisation.
        CardReaderInit = "CardReaderInit",
        /// Card reader power-off.
        CardReaderPowerOff = "CardReaderPowerOff",
        /// Diagnosis of the POI and its hosts.
        Diagnosis = "Diagnosis",
        /// Display on a device.
        Display = "Display",
        /// Enabling of a service.
        EnableService = "EnableService",
        /// Event notification.
        Event = "Event",
        /// Transaction totals.
        GetTotals = "GetTotals",
        /// Input from a device.
        Input = "Input",
        /// Update of an input in progress.
        InputUpdate = "InputUpdate",
        /// Login of a Sale system.
        Login = "Login",
        /// Logout of a Sale system.
        Logout = "Logout",
        /// Loyalty service.
        Loyalty = "Loyalty",
        /// PIN entry.
        Pin = "PIN",
        /// Payment (sale or refund).
        Payment = "Payment",
        /// Print on a device.
        Print = "Print",
        /// Reconciliation of totals.
        Reconciliation = "Reconciliation",
        /// Reversal of a payment.
        Reversal = "Reversal",
        /// Sound on a device.
        Sound = "Sound",
        /// Stored-value service.
        StoredValue = "StoredValue",
        /// Status of a previous transaction.
        TransactionStatus = "TransactionStatus",
        /// Transmission of a message to a host.
        Transmit = "Transmit",
    }
}

impl MessageCategory {
    /// The member of `SaleToPOIRequest` that carries a request (or
    /// notification) of this category: `PaymentRequest`,
    /// `EventNotification`, `InputUpdate`, ...
    pub const fn request_member(self) -> &'static str {
        match self {
            Self::Abort => "AbortRequest",
            Self::Admin => "AdminRequest",
            Self::BalanceInquiry => "BalanceInquiryRequest",
            Self::Batch => "BatchRequest",
            Self::CardAcquisition => "CardAcquisitionRequest",
            Self::CardReaderApdu => "CardReaderAPDURequest",
            Self::CardReaderInit => "CardReaderInitRequest",
            Self::CardReaderPowerOff => "CardReaderPowerOffRequest",
            Self::Diagnosis => "DiagnosisRequest",
            Self::Display => "DisplayRequest",
            Self::EnableService => "EnableServiceRequest",
            Self::Event => "EventNotification",
            Self::GetTotals => "GetTotalsRequest",
            Self::Input => "InputRequest",
            Self::InputUpdate => "InputUpdate",
            Self::Login => "LoginRequest",
            Self::Logout => "LogoutRequest",
            Self::Loyalty => "LoyaltyRequest",
            Self::Pin => "PINRequest",
            Self::Payment => "PaymentRequest",
            Self::Print => "PrintRequest",
            Self::Reconciliation => "ReconciliationRequest",
            Self::Reversal => "ReversalRequest",
            Self::Sound => "SoundRequest",
            Self::StoredValue => "StoredValueRequest",
            Self::TransactionStatus => "TransactionStatusRequest",
            Self::Transmit => "TransmitRequest",
        }
    }

    /// The member of `SaleToPOIResponse` that answers a request of this
    /// category with a top-level `Response` in it, or `None` when nexo
    /// answers the category otherwise: an abort is answered by the
    /// outcome of what it aborts, notifications and input updates by
    /// nothing, display and input by per-device results.
    pub const fn response_member(self) -> Option<&'static str> {
        Some(match self {
            Self::Abort | Self::Event | Self::InputUpdate | Self::Display | Self::Input => {
                return None;
            }
            Self::Admin => "AdminResponse",
            Self::BalanceInquiry => "BalanceInquiryResponse",
            Self::Batch => "BatchResponse",
            Self::CardAcquisition => "CardAcquisitionResponse",
            Self::CardReaderApdu => "CardReaderAPDUResponse",
            Self::CardReaderInit => "CardReaderInitResponse",
            Self::CardReaderPowerOff => "CardReaderPowerOffResponse",
            Self::Diagnosis => "DiagnosisResponse",
            Self::EnableService => "EnableServiceResponse",
            Self::GetTotals => "GetTotalsResponse",
            Self::Login => "LoginResponse",
            Self::Logout => "LogoutResponse",
            Self::Loyalty => "LoyaltyResponse",
            Self::Pin => "PINResponse",
            Self::Payment => "PaymentResponse",
            Self::Print => "PrintResponse",
            Self::Reconciliation => "ReconciliationResponse",
            Self::Reversal => "ReversalResponse",
            Self::Sound => "SoundResponse",
            Self::StoredValue => "StoredValueResponse",
            Self::TransactionStatus => "TransactionStatusResponse",
            Self::Transmit => "TransmitResponse",
        })
    }

    /// The category whose request member is `member`.
    pub fn from_request_member(member: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.request_member() == member)
    }

    /// The category whose response member is `member`.
    pub fn from_response_member(member: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.response_member() == Some(member))
    }
}

wire_enum! {
    /// `Result` of a `Response`.
    ResultType {
        /// The request failed; `ErrorCondition` says how.
        Failure = "Failure",
        /// The request was partly served.
        Partial = "Partial",
        /// The request was served.
        Success = "Success",
    }
}

wire_enum! {
    /// `ErrorCondition` of a failed `Response`.
    ErrorCondition {
        /// The request was aborted (by an `AbortRequest`).
        Aborted = "Aborted",
        /// The POI is busy with another request.
        Busy = "Busy",
        /// The customer or cashier cancelled.
        Cancel = "Cancel",
        /// A device is out of order.
        DeviceOut = "DeviceOut",
        /// The transaction asked about is still in progress.
        InProgress = "InProgress",
        /// A card is inserted and must be removed.
        InsertedCard = "InsertedCard",
        /// The card is not valid.
        InvalidCard = "InvalidCard",
        /// The Sale system is not logged in.
        LoggedOut = "LoggedOut",
        /// The message is not well formed.
        MessageFormat = "MessageFormat",
        /// The request is not allowed or not supported.
        NotAllowed = "NotAllowed",
        /// The transaction asked about is unknown.
        NotFound = "NotFound",
        /// The payment is restricted (e.g. by the card's product).
        PaymentRestriction = "PaymentRestriction",
        /// The request was refused (by the issuer or a POI limit).
        Refusal = "Refusal",
        /// A device is unavailable.
        UnavailableDevice = "UnavailableDevice",
        /// The service is unavailable.
        UnavailableService = "UnavailableService",
        /// The host could not be reached.
        UnreachableHost = "UnreachableHost",
        /// The PIN was wrong.
        WrongPin = "WrongPIN",
    }
}

wire_enum! {
    /// `PaymentType` of a payment.
    PaymentType {
        /// Cash advance.
        CashAdvance = "CashAdvance",
        /// Cash deposit.
        CashDeposit = "CashDeposit",
        /// Completion of a reservation.
        Completion = "Completion",
        /// First reservation.
        FirstReservation = "FirstReservation",
        /// Instalment payment.
        Instalment = "Instalment",
        /// Instalment arranged by the issuer.
        IssuerInstalment = "IssuerInstalment",
        /// A sale.
        Normal = "Normal",
        /// One-time reservation.
        OneTimeReservation = "OneTimeReservation",
        /// Paid out.
        PaidOut = "PaidOut",
        /// Recurring payment.
        Recurring = "Recurring",
        /// A refund to the card.
        Refund = "Refund",
        /// Update of a reservation.
        UpdateReservation = "UpdateReservation",
    }
}

wire_enum! {
    /// `ReversalReason` of a reversal.
    ReversalReason {
        /// The customer cancelled.
        CustCancel = "CustCancel",
        /// A malfunction.
        Malfunction = "Malfunction",
        /// The merchant cancelled.
        MerchantCancel = "MerchantCancel",
        /// The sale could not be completed.
        Unable2Compl = "Unable2Compl",
    }
}

wire_enum! {
    /// `PaymentInstrumentType`.
    PaymentInstrumentType {
        /// A payment card.
        Card = "Card",
        /// Cash.
        Cash = "Cash",
        /// A cheque.
        Check = "Check",
        /// A mobile phone.
        Mobile = "Mobile",
        /// A stored-value account.
        StoredValue = "StoredValue",
    }
}

wire_enum! {
    /// `EntryMode` of a card.
    EntryMode {
        /// Contactless EMV.
        Contactless = "Contactless",
        /// Card on file.
        File = "File",
        /// Chip.
        Icc = "ICC",
        /// Keyed by the cashier.
        Keyed = "Keyed",
        /// Magnetic stripe.
        MagStripe = "MagStripe",
        /// Manual entry.
        Manual = "Manual",
        /// Mobile phone.
        Mobile = "Mobile",
        /// Contactless magnetic stripe.
        Rfid = "RFID",
        /// Scanned (barcode, QR code).
        Scanned = "Scanned",
        /// Synchronous chip card.
        SynchronousIcc = "SynchronousICC",
        /// Tapped.
        Tapped = "Tapped",
    }
}

wire_enum! {
    /// `DocumentQualifier` of a receipt or document.
    DocumentQualifier {
        /// The cashier's receipt.
        CashierReceipt = "CashierReceipt",
        /// The customer's receipt.
        CustomerReceipt = "CustomerReceipt",
        /// Another document.
        Document = "Document",
        /// The journal.
        Journal = "Journal",
        /// The Sale system's receipt.
        SaleReceipt = "SaleReceipt",
        /// A voucher.
        Voucher = "Voucher",
    }
}

wire_enum! {
    /// `OutputFormat` of an output content.
    OutputFormat {
        /// A barcode.
        BarCode = "BarCode",
        /// A predefined message reference.
        MessageRef = "MessageRef",
        /// Text lines.
        Text = "Text",
        /// XHTML.
        Xhtml = "XHTML",
    }
}

wire_enum! {
    /// `Alignment` of an output text line.
    Alignment {
        /// Centred.
        Centred = "Centred",
        /// Justified.
        Justified = "Justified",
        /// Left.
        Left = "Left",
        /// Right.
        Right = "Right",
    }
}

wire_enum! {
    /// `CharacterStyle` of an output text line.
    CharacterStyle {
        /// Bold.
        Bold = "Bold",
        /// Italic.
        Italic = "Italic",
        /// Normal.
        Normal = "Normal",
        /// Underlined.
        Underlined = "Underlined",
    }
}

wire_enum! {
    /// `Device` a display output is for.
    DeviceType {
        /// The cashier's display.
        CashierDisplay = "CashierDisplay",
        /// The cashier's input device.
        CashierInput = "CashierInput",
        /// The customer's display.
        CustomerDisplay = "CustomerDisplay",
        /// The customer's input device.
        CustomerInput = "CustomerInput",
    }
}

wire_enum! {
    /// `InfoQualify`: what kind of information a display output is.
    InfoQualify {
        /// Assistance to the customer.
        CustomerAssistance = "CustomerAssistance",
        /// Plain display.
        Display = "Display",
        /// A document.
        Document = "Document",
        /// An error.
        Error = "Error",
        /// A prompt for input.
        Input = "Input",
        /// Replication of the POI's display.
        PoiReplication = "POIReplication",
        /// A receipt.
        Receipt = "Receipt",
        /// A sound.
        Sound = "Sound",
        /// A status.
        Status = "Status",
        /// A voucher.
        Voucher = "Voucher",
    }
}

wire_enum! {
    /// `EventToNotify` of an event notification.
    EventToNotify {
        /// A request was aborted.
        Abort = "Abort",
        /// Maintenance begins.
        BeginMaintenance = "BeginMaintenance",
        /// A card was inserted.
        CardInserted = "CardInserted",
        /// A card was removed.
        CardRemoved = "CardRemoved",
        /// A transaction completed.
        Completed = "Completed",
        /// The customer chose a language.
        CustomerLanguage = "CustomerLanguage",
        /// Maintenance ended.
        EndMaintenance = "EndMaintenance",
        /// The POI is initialised.
        Initialised = "Initialised",
        /// A key was pressed.
        KeyPressed = "KeyPressed",
        /// The network is connected.
        NetworkConnected = "NetworkConnected",
        /// The network is disconnected.
        NetworkDisconnected = "NetworkDisconnected",
        /// The POI is out of order.
        OutOfOrder = "OutOfOrder",
        /// A message was rejected (`RejectedMessage` carries it).
        Reject = "Reject",
        /// The Sale system's administration is asked for.
        SaleAdmin = "SaleAdmin",
        /// The Sale system is woken up.
        SaleWakeUp = "SaleWakeUp",
        /// A barcode was scanned.
        ScanBarcodeResult = "ScanBarcodeResult",
        /// A security alarm.
        SecurityAlarm = "SecurityAlarm",
        /// The POI shuts down.
        Shutdown = "Shutdown",
        /// Assistance stopped.
        StopAssistance = "StopAssistance",
    }
}

wire_enum! {
    /// `GlobalStatus` of the POI.
    GlobalStatus {
        /// Busy with a transaction.
        Busy = "Busy",
        /// In maintenance.
        Maintenance = "Maintenance",
        /// Working.
        Ok = "OK",
        /// Unreachable.
        Unreachable = "Unreachable",
    }
}

wire_enum! {
    /// `PrinterStatus` of the POI.
    PrinterStatus {
        /// No paper.
        NoPaper = "NoPaper",
        /// Working.
        Ok = "OK",
        /// Out of order.
        OutOfOrder = "OutOfOrder",
        /// Paper jam.
        PaperJam = "PaperJam",
        /// Paper low.
        PaperLow = "PaperLow",
    }
}

wire_enum! {
    /// `TerminalEnvironment`.
    TerminalEnvironment {
        /// Attended by a cashier.
        Attended = "Attended",
        /// Partly attended.
        SemiAttended = "SemiAttended",
        /// Unattended.
        Unattended = "Unattended",
    }
}

wire_enum! {
    /// `SaleCapabilities` of a Sale terminal.
    SaleCapability {
        /// Cashier display.
        CashierDisplay = "CashierDisplay",
        /// Cashier error display.
        CashierError = "CashierError",
        /// Cashier input.
        CashierInput = "CashierInput",
        /// Cashier status display.
        CashierStatus = "CashierStatus",
        /// Customer assistance.
        CustomerAssistance = "CustomerAssistance",
        /// Customer display.
        CustomerDisplay = "CustomerDisplay",
        /// Customer error display.
        CustomerError = "CustomerError",
        /// Customer input.
        CustomerInput = "CustomerInput",
        /// Contactless EMV reader.
        EmvContactless = "EMVContactless",
        /// Chip reader.
        Icc = "ICC",
        /// Magnetic stripe reader.
        MagStripe = "MagStripe",
        /// Replication of the POI's display.
        PoiReplication = "POIReplication",
        /// Document printer.
        PrinterDocument = "PrinterDocument",
        /// Receipt printer.
        PrinterReceipt = "PrinterReceipt",
        /// Voucher printer.
        PrinterVoucher = "PrinterVoucher",
    }
}

wire_enum! {
    /// `POICapabilities` of a POI terminal.
    PoiCapability {
        /// Cash handling.
        CashHandling = "CashHandling",
        /// Cashier display.
        CashierDisplay = "CashierDisplay",
        /// Cashier error display.
        CashierError = "CashierError",
        /// Cashier input.
        CashierInput = "CashierInput",
        /// Customer display.
        CustomerDisplay = "CustomerDisplay",
        /// Customer error display.
        CustomerError = "CustomerError",
        /// Customer input.
        CustomerInput = "CustomerInput",
        /// Contactless EMV reader.
        EmvContactless = "EMVContactless",
        /// Chip reader.
        Icc = "ICC",
        /// Magnetic stripe reader.
        MagStripe = "MagStripe",
        /// Document printer.
        PrinterDocument = "PrinterDocument",
        /// Receipt printer.
        PrinterReceipt = "PrinterReceipt",
        /// Voucher printer.
        PrinterVoucher = "PrinterVoucher",
    }
}

/// Every enumeration's model name and wire values, for checks against
/// other implementations of the model.
pub fn all_enumerations() -> Vec<(&'static str, Vec<&'static str>)> {
    fn strs<T: Copy>(all: &[T], f: fn(T) -> &'static str) -> Vec<&'static str> {
        all.iter().map(|v| f(*v)).collect()
    }
    vec![
        (
            "MessageClassType",
            strs(MessageClass::ALL, MessageClass::as_str),
        ),
        ("MessageType", strs(MessageType::ALL, MessageType::as_str)),
        (
            "MessageCategoryType",
            strs(MessageCategory::ALL, MessageCategory::as_str),
        ),
        ("ResultType", strs(ResultType::ALL, ResultType::as_str)),
        (
            "ErrorConditionType",
            strs(ErrorCondition::ALL, ErrorCondition::as_str),
        ),
        ("PaymentType", strs(PaymentType::ALL, PaymentType::as_str)),
        (
            "ReversalReasonType",
            strs(ReversalReason::ALL, ReversalReason::as_str),
        ),
        (
            "PaymentInstrumentType",
            strs(PaymentInstrumentType::ALL, PaymentInstrumentType::as_str),
        ),
        ("EntryModeType", strs(EntryMode::ALL, EntryMode::as_str)),
        (
            "DocumentQualifierType",
            strs(DocumentQualifier::ALL, DocumentQualifier::as_str),
        ),
        (
            "OutputFormatType",
            strs(OutputFormat::ALL, OutputFormat::as_str),
        ),
        ("AlignmentType", strs(Alignment::ALL, Alignment::as_str)),
        (
            "CharacterStyleType",
            strs(CharacterStyle::ALL, CharacterStyle::as_str),
        ),
        ("DeviceType", strs(DeviceType::ALL, DeviceType::as_str)),
        (
            "InfoQualifyType",
            strs(InfoQualify::ALL, InfoQualify::as_str),
        ),
        (
            "EventToNotifyType",
            strs(EventToNotify::ALL, EventToNotify::as_str),
        ),
        (
            "GlobalStatusType",
            strs(GlobalStatus::ALL, GlobalStatus::as_str),
        ),
        (
            "PrinterStatusType",
            strs(PrinterStatus::ALL, PrinterStatus::as_str),
        ),
        (
            "TerminalEnvironmentType",
            strs(TerminalEnvironment::ALL, TerminalEnvironment::as_str),
        ),
        (
            "SaleCapabilitiesType",
            strs(SaleCapability::ALL, SaleCapability::as_str),
        ),
        (
            "POICapabilitiesType",
            strs(PoiCapability::ALL, PoiCapability::as_str),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_round_trip() {
        for (name, values) in all_enumerations() {
            let mut sorted = values.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), values.len(), "{name} has a duplicate value");
        }
        for c in MessageCategory::ALL {
            assert_eq!(MessageCategory::from_wire(c.as_str()), Some(*c));
            assert_eq!(
                MessageCategory::from_request_member(c.request_member()),
                Some(*c)
            );
            if let Some(member) = c.response_member() {
                assert_eq!(MessageCategory::from_response_member(member), Some(*c));
            }
        }
        let json = serde_json::to_string(&ErrorCondition::WrongPin).unwrap();
        assert_eq!(json, "\"WrongPIN\"");
        let back: ErrorCondition = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ErrorCondition::WrongPin);
        let err = serde_json::from_str::<ErrorCondition>("\"WrongPin\"").unwrap_err();
        assert!(err.to_string().contains("ErrorCondition"), "{err}");
    }
}
