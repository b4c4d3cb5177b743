// The app's nexo messages: the requests it builds, and what it reads in
// the answers (is this answer the request's? what did the terminal say,
// in words? the card, the receipt, the progress). Pure functions, no I/O:
// the same rules as posnet's command-line phone (crates/phone: check.rs,
// recovery.rs, explain.rs).

const PROTOCOL_VERSION = "3.0";

// ---------------------------------------------------------------- amounts

/// An amount as the cashier types it (`12.50`, `12,50`) in minor units of
/// a currency with `decimals` decimals; `null` when it is not an amount,
/// has more decimals than the currency, or is too large to be exact.
export function parseAmount(text, decimals) {
  const m = /^\s*(\d{1,13})(?:[.,](\d*))?\s*$/.exec(String(text));
  if (!m) return null;
  const fraction = m[2] ?? "";
  if (fraction.length > decimals) return null;
  const minor = Number(m[1] + fraction.padEnd(decimals, "0"));
  return Number.isSafeInteger(minor) ? minor : null;
}

/// Minor units as text with the currency's decimals: `12.50`.
export function formatAmount(minor, decimals) {
  const digits = String(minor).padStart(decimals + 1, "0");
  return decimals === 0 ? digits : `${digits.slice(0, -decimals)}.${digits.slice(-decimals)}`;
}

/// Minor units as the JSON number nexo carries (major units): the decimal
/// text read as a number, which JSON writes in its shortest exact form
/// (`12.5`), as posnet reads it (exactly, never through a float).
export function majorAmount(minor, decimals) {
  return Number(formatAmount(minor, decimals));
}

/// A major-units JSON number of an answer (`12.5`) in minor units.
/// Amounts are at most 13 integer digits and 4 decimals, well inside
/// what a double holds exactly, so rounding restores the decimal text.
export function minorAmount(major, decimals) {
  return Math.round(major * 10 ** decimals);
}

/// `CNY 12.50`.
export function money(minor, currency, decimals) {
  return `${currency} ${formatAmount(minor, decimals)}`;
}

// --------------------------------------------------------------- requests

/// A request's MessageHeader. `ids`: `{saleId, serviceId, poiId}`.
export function header(category, ids) {
  return {
    ProtocolVersion: PROTOCOL_VERSION,
    MessageClass: "Service",
    MessageCategory: category,
    MessageType: "Request",
    ServiceID: ids.serviceId,
    SaleID: ids.saleId,
    POIID: ids.poiId,
  };
}

/// A `PaymentRequest`: a sale, or with `refund` (`{original:
/// {TransactionID, TimeStamp}, supervisorCode}`) a refund to the card of
/// terminal transaction `original`. `amount`: `{minor, currency,
/// decimals}`; `at`: the Date it starts. The ServiceID is the sale
/// transaction's id too. `reference`: the merchant system's order the
/// payment is for (SaleReferenceID), when it came from one.
export function paymentRequest(ids, { amount, at, reference, refund }) {
  const saleData = {
    SaleTransactionID: { TransactionID: ids.serviceId, TimeStamp: at.toISOString() },
  };
  if (reference) saleData.SaleReferenceID = reference;
  if (refund) {
    // URL-encoded pairs, as the terminal reads them (docs/ecr-api.md).
    saleData.SaleToAcquirerData = new URLSearchParams({ supervisorCode: refund.supervisorCode }).toString();
  }
  const transaction = {
    AmountsReq: { Currency: amount.currency, RequestedAmount: majorAmount(amount.minor, amount.decimals) },
  };
  if (refund) {
    transaction.OriginalPOITransaction = { POIID: ids.poiId, POITransactionID: refund.original };
  }
  return {
    SaleToPOIRequest: {
      MessageHeader: header("Payment", ids),
      PaymentRequest: {
        SaleData: saleData,
        PaymentTransaction: transaction,
        PaymentData: { PaymentType: refund ? "Refund" : "Normal" },
      },
    },
  };
}

/// A `TransactionStatusRequest` about this Sale system's exchange
/// `reference` (its ServiceID) of `category`, with the customer's receipt.
export function statusRequest(ids, reference, category = "Payment") {
  return {
    SaleToPOIRequest: {
      MessageHeader: header("TransactionStatus", ids),
      TransactionStatusRequest: {
        MessageReference: { MessageCategory: category, ServiceID: reference, SaleID: ids.saleId },
        ReceiptReprintFlag: true,
        DocumentQualifier: ["CustomerReceipt"],
      },
    },
  };
}

/// An `AbortRequest` for this Sale system's payment `reference` waiting
/// for its card.
export function abortRequest(ids, reference) {
  return {
    SaleToPOIRequest: {
      MessageHeader: header("Abort", ids),
      AbortRequest: {
        AbortReason: "MerchantAbort",
        MessageReference: { MessageCategory: "Payment", ServiceID: reference, SaleID: ids.saleId },
      },
    },
  };
}

// ------------------------------------------------------- reading answers

/// The body of a message: `[name, body]` of its one field besides
/// MessageHeader (and SecurityTrailer).
export function body(message) {
  const root = message.SaleToPOIResponse ?? message.SaleToPOIRequest;
  if (!root || typeof root !== "object") return [null, null];
  const name = Object.keys(root).find((k) => k !== "MessageHeader" && k !== "SecurityTrailer");
  return name ? [name, root[name]] : [null, null];
}

function show(value) {
  return value === undefined || value === null ? "absent" : JSON.stringify(value);
}

function compare(out, field, expected, got) {
  if (expected !== got) out.push({ field, expected: show(expected), got: show(got) });
}

/// The mismatches of an answer's header with its request's: SaleID,
/// ServiceID, POIID, MessageCategory, and MessageType Response.
export function checkHeader(requestHeader, responseHeader) {
  const out = [];
  const got = responseHeader ?? {};
  compare(out, "MessageCategory", requestHeader.MessageCategory, got.MessageCategory);
  compare(out, "MessageType", "Response", got.MessageType);
  compare(out, "SaleID", requestHeader.SaleID, got.SaleID);
  compare(out, "ServiceID", requestHeader.ServiceID, got.ServiceID);
  compare(out, "POIID", requestHeader.POIID, got.POIID);
  return out;
}

/// A payment answer against its request: the SaleTransactionID echoed
/// (an approval must carry it), and for an approval the currency and the
/// amount authorized. A refusal authorizes nothing: its amounts are not
/// checked.
export function checkPayment(request, response) {
  const out = [];
  const approved = response.Response?.Result === "Success";
  const sent = request.SaleData.SaleTransactionID.TransactionID;
  const echoed = response.SaleData?.SaleTransactionID?.TransactionID;
  if (response.SaleData || approved) compare(out, "SaleTransactionID", sent, echoed);
  if (!approved) return out;
  const amounts = response.PaymentResult?.AmountsResp;
  if (!amounts) {
    compare(out, "AmountsResp", "present", undefined);
    return out;
  }
  const asked = request.PaymentTransaction.AmountsReq;
  if (amounts.Currency !== undefined) compare(out, "Currency", asked.Currency, amounts.Currency);
  compare(out, "AuthorizedAmount", asked.RequestedAmount, amounts.AuthorizedAmount);
  return out;
}

/// Everything checked: the header, then a payment's body.
export function checkResponse(request, response) {
  const requestRoot = request.SaleToPOIRequest;
  const responseRoot = response.SaleToPOIResponse;
  if (!responseRoot) return [{ field: "SaleToPOIResponse", expected: "present", got: "absent" }];
  const out = checkHeader(requestRoot.MessageHeader, responseRoot.MessageHeader);
  if (requestRoot.PaymentRequest && responseRoot.PaymentResponse) {
    out.push(...checkPayment(requestRoot.PaymentRequest, responseRoot.PaymentResponse));
  }
  return out;
}

/// Mismatches in a line.
export function describeMismatches(mismatches) {
  return mismatches.map((m) => `${m.field} is ${m.got} where ${m.expected} was sent`).join("; ");
}

/// What one TransactionStatusResponse says about `original` (the request
/// whose answer was lost): `{kind: "answer", response}` with the repeated
/// answer when it matches the request, `{kind: "inProgress"}`,
/// `{kind: "notFound"}` (the terminal never received it),
/// `{kind: "inconsistent", mismatches}` or `{kind: "failed", reason}`.
export function judgeStatus(original, status) {
  const response = status.Response ?? {};
  if (response.Result !== "Success") {
    if (response.ErrorCondition === "InProgress") return { kind: "inProgress" };
    if (response.ErrorCondition === "NotFound") return { kind: "notFound" };
    return { kind: "failed", reason: reason(response) };
  }
  const repeated = status.RepeatedMessageResponse;
  const category = original.SaleToPOIRequest.MessageHeader.MessageCategory;
  const repeatedBody = repeated?.RepeatedResponseMessageBody?.[`${category}Response`];
  if (!repeated || !repeatedBody) {
    return { kind: "inconsistent", mismatches: [{ field: "RepeatedMessageResponse", expected: "present", got: "absent" }] };
  }
  const answer = { SaleToPOIResponse: { MessageHeader: repeated.MessageHeader, [`${category}Response`]: repeatedBody } };
  const mismatches = checkResponse(original, answer);
  return mismatches.length ? { kind: "inconsistent", mismatches } : { kind: "answer", response: answer };
}

// ----------------------------------------------------------------- words

/// The pairs of an AdditionalResponse or EventDetails (URL-encoded), at
/// most 32: enough for anything a terminal says, bounded whatever it sends.
export function pairs(encoded) {
  return [...new URLSearchParams(encoded ?? "")].slice(0, 32);
}

/// The `message` pair of an encoded text, or the pairs as text.
export function messageOf(encoded) {
  const all = pairs(encoded);
  const message = all.find(([k]) => k === "message");
  if (message) return message[1];
  return all.map(([k, v]) => (v ? `${k}=${v}` : k)).join(", ");
}

/// The terminal's outcome in a line: `Success`, or the ErrorCondition and
/// the terminal's message with any other pairs it gave (`Refusal:
/// insufficient funds (responseCode=51)`).
export function reason(response) {
  if (response.Result === "Success") return "Success";
  const condition = response.ErrorCondition ?? response.Result ?? "Failure";
  if (!response.AdditionalResponse) return condition;
  const all = pairs(response.AdditionalResponse);
  const message = all.find(([k]) => k === "message")?.[1];
  const others = all.filter(([k]) => k !== "message").map(([k, v]) => `${k}=${v}`);
  const extra = others.length ? ` (${others.join(", ")})` : "";
  return message ? `${condition}: ${message}${extra}` : `${condition}${extra}`;
}

const ADVICE = {
  Refusal: "Declined: ask the customer for another card or another means of payment.",
  WrongPIN: "The PIN was wrong: the customer may try again.",
  InvalidCard: "This card cannot be used: ask for another card.",
  PaymentRestriction: "This card cannot pay for this: ask for another card.",
  Cancel: "Cancelled at the terminal (or no card came in time): start again if the customer wants to pay.",
  Aborted: "The payment was cancelled: start again if the customer wants to pay.",
  InsertedCard: "A card is still in the reader: ask the customer to remove it, then start again.",
  Busy: "The terminal is serving another payment: wait a moment and try again.",
  LoggedOut: "The terminal wants a login first.",
  UnreachableHost: "The terminal cannot reach its payment host: take another means of payment meanwhile.",
  DeviceOut: "A device of the terminal (card reader, PIN pad, printer) is out of order.",
  UnavailableDevice: "A device of the terminal (card reader, PIN pad, printer) is out of order.",
  UnavailableService: "The terminal does not offer this now (it may not have signed on with its host yet).",
  NotAllowed: "The terminal does not allow this request.",
  MessageFormat: "The terminal could not read the request: the app and the terminal may be different versions.",
  NotFound: "The terminal knows no such transaction.",
  InProgress: "The transaction is still running at the terminal.",
};

/// What the cashier can do about a failure with `condition`.
export function advice(condition) {
  return ADVICE[condition] ?? "";
}

/// Whether a notification with `notificationHeader` concerns exchange
/// `serviceId` of Sale system `saleId`: a terminal pushes every phone
/// everything, and the app shows its own exchange's progress (a
/// notification naming no exchange concerns all).
export function concerns(notificationHeader, saleId, serviceId) {
  const h = notificationHeader ?? {};
  return (h.SaleID === undefined || h.SaleID === saleId) && (h.ServiceID === undefined || h.ServiceID === serviceId);
}

function contentLines(content) {
  const lines = (content?.OutputText ?? []).map((t) => t.Text).filter((t) => typeof t === "string");
  if (lines.length) return lines;
  const predefined = content?.PredefinedContent?.ReferenceID;
  return predefined ? [predefined] : [];
}

/// A notification's text lines (`["Present card", "CNY 12.50"]`,
/// `["CardInserted", "step=pinEntry", "PINEntry"]`), or `null` for a
/// message that is no notification.
export function progressLines(message) {
  const [name, content] = body(message);
  if (name === "DisplayRequest") {
    const lines = (content.DisplayOutput ?? []).flatMap((d) => contentLines(d.OutputContent));
    return lines.length ? lines : null;
  }
  if (name === "EventNotification") {
    const lines = [String(content.EventToNotify)];
    if (content.EventDetails) lines.push(messageOf(content.EventDetails));
    lines.push(...contentLines(content.DisplayOutput?.OutputContent));
    return lines;
  }
  return null;
}

/// A terminal's plain Reject of a message (it answers so what it cannot
/// read or authenticate): `{details, security}`, `security` true when it
/// was refused for its key; `null` when `message` is not a Reject.
export function rejection(message) {
  const [name, content] = body(message);
  if (name !== "EventNotification" || content.EventToNotify !== "Reject") return null;
  const details = content.EventDetails ? messageOf(content.EventDetails) : "";
  return { details, security: details.startsWith("message rejected by message security") };
}

/// The text lines of the answer's receipt with `qualifier`.
export function receiptLines(payment, qualifier = "CustomerReceipt") {
  return (payment.PaymentReceipt ?? [])
    .filter((r) => r.DocumentQualifier === qualifier)
    .flatMap((r) => r.OutputContent?.OutputText ?? [])
    .map((t) => t.Text)
    .filter((t) => typeof t === "string");
}

/// What the cashier sees of a payment answer.
export function paymentSummary(payment) {
  const result = payment.PaymentResult ?? {};
  const card = result.PaymentInstrumentData?.CardData ?? {};
  const acquirer = result.PaymentAcquirerData ?? {};
  const poi = payment.POIData?.POITransactionID ?? {};
  return {
    approved: payment.Response?.Result === "Success",
    reason: reason(payment.Response ?? {}),
    condition: payment.Response?.ErrorCondition ?? null,
    message: payment.Response?.AdditionalResponse ? messageOf(payment.Response.AdditionalResponse) : "",
    responseCode: pairs(payment.Response?.AdditionalResponse).find(([k]) => k === "responseCode")?.[1] ?? null,
    currency: result.AmountsResp?.Currency ?? null,
    authorized: result.AmountsResp?.AuthorizedAmount ?? null,
    maskedPan: card.MaskedPan ?? null,
    brand: card.PaymentBrand ?? null,
    approvalCode: acquirer.ApprovalCode ?? null,
    acquirerPoiId: acquirer.AcquirerPOIID ?? null,
    acquirerTransactionId: acquirer.AcquirerTransactionID?.TransactionID ?? null,
    transactionId: poi.TransactionID ?? null,
    transactionTime: poi.TimeStamp ?? null,
    receipt: receiptLines(payment),
  };
}
