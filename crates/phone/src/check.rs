//! Does an answer belong to the request it came for? A response whose
//! header names another Sale system, exchange or terminal, or a payment
//! answer for another amount, currency or sale transaction, is not this
//! request's answer, whatever it says. Pure functions: each rule is
//! tested on its own.

use nexo::message::{RequestBody, ResponseBody, SaleToPoiRequest, SaleToPoiResponse};
use nexo::model::{
    MessageHeader, PaymentRequest, PaymentResponse, ReversalRequest, ReversalResponse,
};
use nexo::wire::{MessageType, ResultType};

/// One way an answer differs from its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The field (`SaleID`, `AuthorizedAmount`, ...).
    pub field: &'static str,
    /// What the request said.
    pub expected: String,
    /// What the answer says (`absent` when missing).
    pub got: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {} where {} was sent",
            self.field, self.got, self.expected
        )
    }
}

/// The mismatches of an answer, shown in a line.
pub fn describe(mismatches: &[Mismatch]) -> String {
    mismatches
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn show(value: Option<&str>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| format!("{v:?}"))
}

fn compare(
    out: &mut Vec<Mismatch>,
    field: &'static str,
    expected: Option<&str>,
    got: Option<&str>,
) {
    if expected != got {
        out.push(Mismatch {
            field,
            expected: show(expected),
            got: show(got),
        });
    }
}

/// The response header's identifiers against the request's: `SaleID`,
/// `ServiceID`, `POIID`, `MessageCategory`, and `MessageType` `Response`.
pub fn header(request: &MessageHeader, response: &MessageHeader) -> Vec<Mismatch> {
    let mut out = Vec::new();
    compare(
        &mut out,
        "MessageCategory",
        Some(request.message_category.as_str()),
        Some(response.message_category.as_str()),
    );
    compare(
        &mut out,
        "MessageType",
        Some(MessageType::Response.as_str()),
        Some(response.message_type.as_str()),
    );
    compare(
        &mut out,
        "SaleID",
        request.sale_id.as_deref(),
        response.sale_id.as_deref(),
    );
    compare(
        &mut out,
        "ServiceID",
        request.service_id.as_deref(),
        response.service_id.as_deref(),
    );
    compare(
        &mut out,
        "POIID",
        Some(&request.poi_id),
        Some(&response.poi_id),
    );
    out
}

/// A payment answer against its request: the `SaleTransactionID` echoed
/// (when the answer carries `SaleData`; an approval must), and for an
/// approval the currency and the amount authorized. A refusal carries no
/// amount worth checking (it authorizes nothing).
pub fn payment(request: &PaymentRequest, response: &PaymentResponse) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let approved = response.response.result == ResultType::Success;
    let sent = &request.sale_data.sale_transaction_id.transaction_id;
    match &response.sale_data {
        Some(sale) => compare(
            &mut out,
            "SaleTransactionID",
            Some(sent),
            Some(&sale.sale_transaction_id.transaction_id),
        ),
        None if approved => compare(&mut out, "SaleTransactionID", Some(sent), None),
        None => {}
    }
    if !approved {
        return out;
    }
    let asked = &request.payment_transaction.amounts_req;
    let amounts = response
        .payment_result
        .as_ref()
        .and_then(|r| r.amounts_resp.as_ref());
    let Some(amounts) = amounts else {
        compare(&mut out, "AmountsResp", Some("present"), None);
        return out;
    };
    if let Some(currency) = &amounts.currency {
        compare(&mut out, "Currency", Some(&asked.currency), Some(currency));
    }
    let requested = asked.requested_amount.map(|a| a.to_string());
    compare(
        &mut out,
        "AuthorizedAmount",
        requested.as_deref(),
        Some(&amounts.authorized_amount.to_string()),
    );
    out
}

/// A reversal answer against its request: the transaction reversed is
/// the one asked for, when the answer names it.
pub fn reversal(request: &ReversalRequest, response: &ReversalResponse) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let asked = request
        .original_poi_transaction
        .poi_transaction_id
        .as_ref()
        .map(|t| t.transaction_id.as_str());
    let answered = response
        .original_poi_transaction
        .as_ref()
        .and_then(|o| o.poi_transaction_id.as_ref())
        .map(|t| t.transaction_id.as_str());
    if answered.is_some() {
        compare(&mut out, "OriginalPOITransaction", asked, answered);
    }
    out
}

/// The body's own checks, for the bodies that have them.
pub fn body(request: &RequestBody, response: &ResponseBody) -> Vec<Mismatch> {
    match (request, response) {
        (RequestBody::Payment(q), ResponseBody::Payment(a)) => payment(q, a),
        (RequestBody::Reversal(q), ResponseBody::Reversal(a)) => reversal(q, a),
        // A body of another category: the header check reports it.
        _ => Vec::new(),
    }
}

/// Everything checked: the header, then the body.
pub fn response(request: &SaleToPoiRequest, response: &SaleToPoiResponse) -> Vec<Mismatch> {
    let mut out = header(&request.header, &response.header);
    out.extend(body(&request.body, &response.body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexo::amount::Amount;
    use nexo::inbound::{Security, parse_request, parse_response};

    const PAYMENT: &str = include_str!("../../nexo/tests/fixtures/requests/payment.json");
    const APPROVED: &str = include_str!("../../nexo/tests/fixtures/responses/payment.json");
    const DECLINED: &str =
        include_str!("../../nexo/tests/fixtures/responses/payment-declined.json");
    const REVERSAL: &str = include_str!("../../nexo/tests/fixtures/requests/reversal.json");
    const REVERSED: &str = include_str!("../../nexo/tests/fixtures/responses/reversal.json");

    fn request(json: &str) -> SaleToPoiRequest {
        parse_request(json.as_bytes(), Security::Plain)
            .unwrap()
            .message
    }

    fn answer(json: &str) -> SaleToPoiResponse {
        parse_response(json.as_bytes(), Security::Plain)
            .unwrap()
            .message
    }

    fn fields(m: &[Mismatch]) -> Vec<&'static str> {
        m.iter().map(|m| m.field).collect()
    }

    fn approved_mut(r: &mut SaleToPoiResponse) -> &mut PaymentResponse {
        match &mut r.body {
            ResponseBody::Payment(p) => p,
            _ => unreachable!("a payment fixture"),
        }
    }

    #[test]
    fn the_fixtures_match_their_requests() {
        assert_eq!(response(&request(PAYMENT), &answer(APPROVED)), vec![]);
        assert_eq!(response(&request(PAYMENT), &answer(DECLINED)), vec![]);
        assert_eq!(response(&request(REVERSAL), &answer(REVERSED)), vec![]);
    }

    #[test]
    fn every_header_identifier_is_checked() {
        let q = request(PAYMENT);
        let mut a = answer(APPROVED);
        a.header.sale_id = Some("ECR-2".into());
        a.header.service_id = None;
        a.header.poi_id = "other".into();
        let m = response(&q, &a);
        assert_eq!(fields(&m), ["SaleID", "ServiceID", "POIID"]);
        assert_eq!(
            m[0].to_string(),
            "SaleID is \"ECR-2\" where \"ECR-1\" was sent"
        );
        assert_eq!(m[1].got, "absent");

        let mut a = answer(REVERSED);
        a.header = answer(APPROVED).header;
        assert_eq!(fields(&header(&q.header, &a.header)), Vec::<&str>::new());
        // A reversal answer to a payment request: the category differs.
        let r = request(REVERSAL);
        assert_eq!(
            fields(&response(&r, &answer(APPROVED))),
            ["MessageCategory", "ServiceID"]
        );
        let mut h = answer(APPROVED).header;
        h.message_type = MessageType::Request;
        assert_eq!(fields(&header(&q.header, &h)), ["MessageType"]);
    }

    #[test]
    fn an_approval_for_another_amount_currency_or_sale_is_not_ours() {
        let q = request(PAYMENT);
        let mut a = answer(APPROVED);
        let p = approved_mut(&mut a);
        let amounts = p
            .payment_result
            .as_mut()
            .unwrap()
            .amounts_resp
            .as_mut()
            .unwrap();
        amounts.authorized_amount = Amount::from_minor(1251, "EUR").unwrap();
        amounts.currency = Some("USD".into());
        p.sale_data
            .as_mut()
            .unwrap()
            .sale_transaction_id
            .transaction_id = "27909".into();
        let m = response(&q, &a);
        assert_eq!(
            fields(&m),
            ["SaleTransactionID", "Currency", "AuthorizedAmount"]
        );
        assert_eq!(m[2].expected, "\"12.5\"");
        assert_eq!(m[2].got, "\"12.51\"");
    }

    #[test]
    fn an_approval_must_say_what_it_approved() {
        let q = request(PAYMENT);
        let mut a = answer(APPROVED);
        approved_mut(&mut a).sale_data = None;
        assert_eq!(fields(&response(&q, &a)), ["SaleTransactionID"]);
        let mut a = answer(APPROVED);
        approved_mut(&mut a).payment_result = None;
        assert_eq!(fields(&response(&q, &a)), ["AmountsResp"]);
        // A refusal without SaleData (the terminal refused before reading
        // it) is still the refusal of this request.
        let mut d = answer(DECLINED);
        approved_mut(&mut d).sale_data = None;
        assert_eq!(response(&q, &d), vec![]);
    }

    #[test]
    fn a_reversal_of_another_transaction_is_not_ours() {
        let q = request(REVERSAL);
        let mut a = answer(REVERSED);
        if let ResponseBody::Reversal(r) = &mut a.body {
            r.original_poi_transaction
                .as_mut()
                .unwrap()
                .poi_transaction_id
                .as_mut()
                .unwrap()
                .transaction_id = "000999".into();
        }
        assert_eq!(fields(&response(&q, &a)), ["OriginalPOITransaction"]);
    }
}
