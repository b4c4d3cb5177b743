// The back office's device API (docs/merchant.md, "Cashier devices"): its
// open orders, taking one for a payment, and reporting what the terminal
// said. The back office marks an order paid only once the host's own
// record of the payment confirms the report.

/// Longest back office answer read (a list of open orders is far shorter).
const MAX_ANSWER = 1 << 20;

export class OfficeError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/// `{url, token}` from what the owner gave: the back office's address
/// (an http or https origin) and the device token (64 hex digits).
export function parseOffice(url, token) {
  let origin;
  try {
    const u = new URL(String(url).trim());
    if (!["http:", "https:"].includes(u.protocol) || (u.pathname !== "/" && u.pathname !== "")) throw new Error();
    origin = u.origin;
  } catch {
    throw new OfficeError("The back office address is an http:// or https:// address such as http://192.168.1.10:8600.");
  }
  const t = String(token).trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(t)) throw new OfficeError("The device token is the 64 hexadecimal digits the back office showed.");
  return { url: origin, token: t };
}

/// The back office setting carried by a link the back office shows
/// (`/app/#office=<origin>&token=<token>`); null when there is none.
export function officeFromHash(hash) {
  const params = new URLSearchParams(String(hash).replace(/^#/, ""));
  if (!params.has("office") || !params.has("token")) return null;
  return parseOffice(params.get("office"), params.get("token"));
}

async function call(office, method, path, body) {
  let response;
  try {
    response = await fetch(`${office.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${office.token}`,
        ...(body ? { "content-type": "application/json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch (e) {
    throw new OfficeError(`The back office at ${office.url} cannot be reached (${e.message}).`, 0);
  }
  const text = await response.text();
  if (text.length > MAX_ANSWER) throw new OfficeError("The back office's answer is too long.", response.status);
  let answer = {};
  try {
    answer = text ? JSON.parse(text) : {};
  } catch {
    throw new OfficeError(`The back office answered ${response.status} with something else than JSON.`, response.status);
  }
  if (response.status === 401) {
    throw new OfficeError("The back office refused this phone's device token (unknown or revoked): ask the owner for a new one.", 401);
  }
  if (!response.ok) throw new OfficeError(answer.error ?? `The back office answered ${response.status}.`, response.status);
  return answer;
}

/// The open orders: `[{id, reference, label, outstanding, currency_code, decimals, lines}]`.
export async function openOrders(office) {
  const answer = await call(office, "GET", "/api/v1/open-orders");
  return Array.isArray(answer.orders) ? answer.orders : [];
}

/// Takes order `id` for a payment on terminal `poiId`: `{payment, amount, reference, ...}`.
export async function takeOrder(office, id, poiId) {
  return call(office, "POST", `/api/v1/orders/${encodeURIComponent(id)}/payments`, { terminal: poiId });
}

/// What the back office is told of outcome `outcome` (the terminal's
/// answer as the app read it).
export function reportOf(outcome) {
  const s = outcome.summary;
  const kind = s ? (s.approved ? "approved" : "declined") : outcome.state === "unknown" || outcome.state === "sent" ? "unknown" : "failed";
  return {
    outcome: kind,
    reason: s && !s.approved ? s.reason : outcome.reason ?? null,
    service_id: outcome.serviceId ?? null,
    poi_transaction_id: s?.transactionId ?? null,
    acquirer_terminal_id: s?.acquirerPoiId ?? null,
    rrn: s?.acquirerTransactionId ?? null,
    approval_code: s?.approvalCode ?? null,
    masked_pan: s?.maskedPan ?? null,
  };
}

/// Reports payment `payment` of order `id`: `{status, order_status, reason}`.
export async function report(office, id, payment, outcome) {
  return call(
    office,
    "POST",
    `/api/v1/orders/${encodeURIComponent(id)}/payments/${encodeURIComponent(payment)}`,
    reportOf(outcome),
  );
}
