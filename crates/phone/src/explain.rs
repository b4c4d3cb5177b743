//! Words for the cashier: a terminal's reason for a failure, what to do
//! about it, its progress notifications, and receipts as text lines.

use nexo::message::{RequestBody, SaleToPoiRequest};
use nexo::model::{MessageHeader, OutputContent, PaymentReceipt, Response};
use nexo::wire::{DocumentQualifier, ErrorCondition, ResultType};

/// The `key=value` pairs of an `AdditionalResponse` or `EventDetails`
/// (URL-encoded), at most 32 of them: enough for anything a terminal
/// says, bounded whatever it sends.
pub fn pairs(encoded: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(encoded.as_bytes())
        .take(32)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The `message` pair of an encoded text, or the text itself when it is
/// not `key=value` pairs.
pub fn message_of(encoded: &str) -> String {
    let pairs = pairs(encoded);
    pairs
        .iter()
        .find(|(k, _)| k == "message")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| {
            pairs
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
}

/// The terminal's outcome in a line: `Success`, or the `ErrorCondition`
/// and the terminal's message with any other pairs it gave
/// (`Refusal: insufficient funds (responseCode=51)`).
pub fn reason(response: &Response) -> String {
    if response.result == ResultType::Success {
        return response.result.to_string();
    }
    let condition = response
        .error_condition
        .map_or_else(|| response.result.to_string(), |c| c.to_string());
    let Some(additional) = &response.additional_response else {
        return condition;
    };
    let pairs = pairs(additional);
    let message = pairs
        .iter()
        .find(|(k, _)| k == "message")
        .map(|(_, v)| v.as_str());
    let others: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k != "message")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    match (message, others.is_empty()) {
        (Some(m), true) => format!("{condition}: {m}"),
        (Some(m), false) => format!("{condition}: {m} ({})", others.join(", ")),
        (None, true) => condition,
        (None, false) => format!("{condition} ({})", others.join(", ")),
    }
}

/// What the cashier can do about a failure with `condition`.
pub fn advice(condition: ErrorCondition) -> &'static str {
    use ErrorCondition::*;
    match condition {
        Refusal => {
            "the payment was declined: ask the customer for another card or means of payment"
        }
        WrongPin => "the PIN was wrong: the customer may try again",
        InvalidCard => "the card cannot be used: ask for another card",
        PaymentRestriction => "this card cannot pay for this: ask for another card",
        Cancel => {
            "the customer or the cashier cancelled at the terminal: start again if the customer wants to pay"
        }
        Aborted => "the payment was aborted: start again if the customer wants to pay",
        InsertedCard => {
            "a card is still in the reader: ask the customer to remove it, then start again"
        }
        Busy => "the terminal is serving another request: wait a moment and try again",
        LoggedOut => {
            "the phone is not logged in at the terminal: run `posnet phone login --operator ID`"
        }
        UnreachableHost => {
            "the terminal cannot reach its payment host: run `posnet phone diagnose`, take another means of payment meanwhile"
        }
        DeviceOut | UnavailableDevice => {
            "a device of the terminal (card reader, PIN pad, printer) is out of order: run `posnet phone diagnose`"
        }
        UnavailableService => {
            "the terminal does not offer this service now: run `posnet phone diagnose`"
        }
        NotAllowed => {
            "the terminal does not allow this request (a refund or reversal may need a valid supervisor code)"
        }
        MessageFormat => {
            "the terminal could not read the request: the phone and the terminal may run different versions"
        }
        NotFound => "the terminal knows no such transaction: check the identifier",
        InProgress => {
            "the transaction is still running at the terminal: ask again with `posnet phone status`"
        }
    }
}

/// Whether a notification with `header` concerns the exchange
/// `service_id` of Sale system `sale_id`: a terminal serving several
/// phones pushes each of them everything, and a phone shows only its own
/// exchange's progress (a notification naming no exchange concerns all).
pub fn concerns(header: &MessageHeader, sale_id: &str, service_id: &str) -> bool {
    header.sale_id.as_deref().is_none_or(|s| s == sale_id)
        && header.service_id.as_deref().is_none_or(|s| s == service_id)
}

fn content_text(content: &OutputContent) -> Option<String> {
    let lines: Vec<&str> = content
        .output_text
        .iter()
        .filter_map(|t| t.text.as_deref())
        .collect();
    if !lines.is_empty() {
        return Some(lines.join(" "));
    }
    content
        .predefined_content
        .as_ref()
        .map(|p| p.reference_id.clone())
}

/// A notification in a line (`Present card EUR 12.50`, `CardInserted:
/// step=pinEntry`), or `None` for a message that is no notification.
pub fn progress(notification: &SaleToPoiRequest) -> Option<String> {
    match &notification.body {
        RequestBody::Display(display) => {
            let lines: Vec<String> = display
                .display_output
                .iter()
                .filter_map(|d| content_text(&d.output_content))
                .collect();
            (!lines.is_empty()).then(|| lines.join(" / "))
        }
        RequestBody::Event(event) => {
            let shown = event
                .display_output
                .as_ref()
                .and_then(|d| content_text(&d.output_content));
            let details = event.event_details.as_deref().map(message_of);
            let mut line = event.event_to_notify.to_string();
            for extra in [details, shown].into_iter().flatten() {
                line.push_str(": ");
                line.push_str(&extra);
            }
            Some(line)
        }
        _ => None,
    }
}

/// The text lines of the receipt with `qualifier`, empty when the answer
/// carries none.
pub fn receipt(receipts: &[PaymentReceipt], qualifier: DocumentQualifier) -> Vec<String> {
    receipts
        .iter()
        .filter(|r| r.document_qualifier == qualifier)
        .flat_map(|r| r.output_content.output_text.iter())
        .filter_map(|t| t.text.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexo::inbound::{Security, parse_request, parse_response};
    use nexo::message::ResponseBody;

    fn notification(json: &str) -> SaleToPoiRequest {
        parse_request(json.as_bytes(), Security::Plain)
            .unwrap()
            .message
    }

    #[test]
    fn reasons_name_the_condition_and_the_terminals_words() {
        let declined = parse_response(
            include_bytes!("../../nexo/tests/fixtures/responses/payment-declined.json"),
            Security::Plain,
        )
        .unwrap()
        .message;
        assert_eq!(
            reason(declined.body.response()),
            "Refusal: insufficient funds (responseCode=51)"
        );
        assert_eq!(reason(&Response::success()), "Success");
        let bare = Response {
            result: ResultType::Failure,
            error_condition: Some(ErrorCondition::Busy),
            additional_response: None,
        };
        assert_eq!(reason(&bare), "Busy");
        let odd = Response {
            additional_response: Some("signedOn=false".into()),
            ..bare.clone()
        };
        assert_eq!(reason(&odd), "Busy (signedOn=false)");
        assert!(advice(ErrorCondition::LoggedOut).contains("posnet phone login"));
    }

    #[test]
    fn progress_lines_from_the_fixtures() {
        let display = notification(include_str!(
            "../../nexo/tests/fixtures/requests/display.json"
        ));
        assert_eq!(progress(&display).unwrap(), "Present card EUR 12.50");
        let event = notification(include_str!(
            "../../nexo/tests/fixtures/requests/event.json"
        ));
        assert_eq!(
            progress(&event).unwrap(),
            "CardInserted: step=pinEntry: PINEntry"
        );
        let payment = notification(include_str!(
            "../../nexo/tests/fixtures/requests/payment.json"
        ));
        assert_eq!(progress(&payment), None);
    }

    #[test]
    fn only_this_exchanges_progress_is_shown() {
        let display = notification(include_str!(
            "../../nexo/tests/fixtures/requests/display.json"
        ));
        let h = &display.header;
        assert!(concerns(h, "ECR-1", "0314092653"));
        assert!(!concerns(h, "ECR-2", "0314092653"));
        assert!(!concerns(h, "ECR-1", "0314092654"));
        let mut anonymous = h.clone();
        anonymous.sale_id = None;
        anonymous.service_id = None;
        assert!(concerns(&anonymous, "ECR-9", "1"));
    }

    #[test]
    fn the_customer_receipt_as_lines() {
        let approved = parse_response(
            include_bytes!("../../nexo/tests/fixtures/responses/payment.json"),
            Security::Plain,
        )
        .unwrap()
        .message;
        let ResponseBody::Payment(p) = approved.body else {
            unreachable!()
        };
        assert_eq!(
            receipt(&p.payment_receipt, DocumentQualifier::CustomerReceipt),
            [
                "SALE",
                "CARD 627012******0018",
                "EUR 12.50",
                "APPROVED A1B2C3"
            ]
        );
        assert!(receipt(&p.payment_receipt, DocumentQualifier::CashierReceipt).is_empty());
    }
}
