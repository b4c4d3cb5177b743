// The cashier's phone app (docs/phone-app.md): pair with the terminal that
// served this page, charge an amount, follow the terminal's progress, show
// the result and the e-receipt; refunds with the supervisor's code; the
// status of any exchange; the history kept in this browser; the back
// office's open orders, charged and reported to it.
//
// The page is built with DOM methods and textContent only: the policy
// (Trusted Types) refuses HTML strings.

import { deriveKey } from "./nexo.js";
import { fingerprintText, hostPort, parseCode, sameTerminal } from "./pairing.js";
import { advice, formatAmount, minorAmount, money, parseAmount, paymentRequest } from "./messages.js";
import { OfficeError, officeFromHash, openOrders, parseOffice, report, takeOrder } from "./office.js";
import { Store } from "./store.js";
import { Terminal } from "./terminal.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["loading", "pair", "paired", "pay", "orders", "refund", "progress", "result", "history", "terminal"];

const state = {
  store: null,
  pairing: null,
  terminal: null,
  /// `{code, decimals}` of the terminal's currency, once known.
  currency: null,
  /// ServiceID of the payment under way.
  running: null,
  /// `{url, token}` of the back office whose open orders are charged here.
  office: null,
};

function show(view) {
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  const paired = Boolean(state.pairing);
  $("tabs").hidden = !paired || ["pair", "paired", "progress", "loading"].includes(view);
  for (const b of $("tabs").querySelectorAll("button")) {
    b.setAttribute("aria-current", b.dataset.view === view ? "page" : "false");
  }
}

function element(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
}

function details(list, rows) {
  list.replaceChildren();
  for (const [name, value] of rows) {
    if (value === null || value === undefined || value === "") continue;
    list.append(element("dt", name), element("dd", String(value)));
  }
}

function notice(text) {
  $("notice").textContent = text ?? "";
  $("notice").hidden = !text;
}

// ---------------------------------------------------------------- pairing

async function pair(code) {
  $("pair-error").textContent = "";
  let parsed;
  try {
    parsed = parseCode(code);
  } catch (e) {
    $("pair-error").textContent = e.message;
    return;
  }
  if (!sameTerminal(parsed, location)) {
    $("pair-error").textContent =
      `This code is for the terminal at ${hostPort(parsed)}, and this app was opened from ${location.host}. ` +
      `Open https://${hostPort(parsed)}/app/ on this phone to pair with that terminal.`;
    return;
  }
  $("pair-button").disabled = true;
  try {
    const key = await deriveKey(parsed.passphrase, parsed.keyIdentifier, parsed.keyVersion);
    const pairing = {
      host: parsed.host,
      port: parsed.port,
      fingerprint: parsed.fingerprint,
      poiId: parsed.poiId,
      key,
      pairedAt: new Date().toISOString(),
      currency: null,
    };
    await state.store.savePairing(pairing);
    $("pair-code").value = "";
    await start(pairing);
    $("paired-poi").textContent = pairing.poiId;
    $("paired-fp").textContent = fingerprintText(pairing.fingerprint);
    show("paired");
  } catch (e) {
    $("pair-error").textContent = `Pairing failed: ${e.message}`;
  } finally {
    $("pair-button").disabled = false;
  }
}

/// Scanning needs the camera and the browser's QR reader (BarcodeDetector);
/// where either is missing the code is typed or pasted.
async function setUpScanner() {
  if (!("BarcodeDetector" in globalThis) || !navigator.mediaDevices?.getUserMedia) return;
  try {
    const formats = await globalThis.BarcodeDetector.getSupportedFormats();
    if (!formats.includes("qr_code")) return;
  } catch {
    return;
  }
  $("scan").hidden = false;
  let stream = null;
  let scanning = false;
  const stop = () => {
    scanning = false;
    for (const track of stream?.getTracks() ?? []) track.stop();
    stream = null;
    $("scanner").hidden = true;
    $("scan").hidden = false;
  };
  $("scan-stop").addEventListener("click", stop);
  $("scan").addEventListener("click", async () => {
    $("pair-error").textContent = "";
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    } catch (e) {
      $("pair-error").textContent = `The camera is not available (${e.message}): type or paste the code instead.`;
      return;
    }
    const video = $("scan-video");
    video.srcObject = stream;
    await video.play();
    $("scanner").hidden = false;
    $("scan").hidden = true;
    scanning = true;
    const detector = new globalThis.BarcodeDetector({ formats: ["qr_code"] });
    while (scanning) {
      try {
        const found = (await detector.detect(video)).find((c) => c.rawValue.startsWith("posnet-pair://"));
        if (found) {
          stop();
          $("pair-code").value = found.rawValue;
          await pair(found.rawValue);
          return;
        }
      } catch {
        // A frame that could not be read: try the next one.
      }
      // A few frames a second are plenty for a code held still.
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  });
}

// --------------------------------------------------------------- terminal

/// Starts using `pairing`: the terminal's progress, its currency.
async function start(pairing) {
  state.terminal?.close();
  state.pairing = pairing;
  state.currency = pairing.currency;
  state.terminal = new Terminal({ pairing, saleId: await state.store.saleId(), store: state.store });
  state.terminal.listen();
  $("terminal-line").textContent = `Terminal ${pairing.poiId}`;
  showCurrency();
  await refreshInfo();
}

/// The terminal's name and currency, from the terminal when it answers
/// (kept with the pairing for when it does not).
async function refreshInfo() {
  const info = await state.terminal.info();
  if (!info) return;
  if (info.merchant_name) $("merchant").textContent = info.merchant_name;
  if (info.currency && Number.isInteger(info.decimals)) {
    const currency = { code: info.currency, decimals: info.decimals };
    if (JSON.stringify(currency) !== JSON.stringify(state.currency)) {
      state.currency = currency;
      state.pairing = { ...state.pairing, currency };
      await state.store.savePairing(state.pairing);
    }
  }
  showCurrency();
}

function showCurrency() {
  const code = state.currency?.code ?? "";
  $("currency").textContent = code;
  $("refund-currency").textContent = code;
  $("pay-button").disabled = !state.currency;
  $("refund-button").disabled = !state.currency;
  $("pay-error").textContent = state.currency
    ? ""
    : "The terminal has not told its currency yet (it signs on with its payment host first). Try again in a moment.";
}

function amountOf(input, errorId) {
  const { code, decimals } = state.currency;
  const minor = parseAmount(input.value, decimals);
  if (minor === null || minor === 0) {
    $(errorId).textContent = `Enter an amount in ${code}, with at most ${decimals} decimals.`;
    return null;
  }
  return { minor, currency: code, decimals };
}

// ---------------------------------------------------------------- paying

function showProgress(title, amount) {
  $("progress-title").textContent = title;
  $("progress-amount").textContent = money(amount.minor, amount.currency, amount.decimals);
  $("progress").replaceChildren(element("p", "Sending to the terminal…"));
  $("progress-service").textContent = "";
  $("abort").hidden = false;
  $("abort").disabled = false;
  show("progress");
}

function onLines(lines) {
  $("progress").replaceChildren(...lines.map((line) => element("p", line)));
}

/// Runs a payment or refund to its end, shows the outcome and returns it.
async function run(title, record, build) {
  showProgress(title, record.amount);
  let outcome;
  try {
    outcome = await state.terminal.pay(record, build, {
      onLines,
      onStarted: (serviceId) => {
        state.running = serviceId;
        $("progress-service").textContent = `ServiceID ${serviceId}`;
      },
    });
  } catch (e) {
    outcome = { state: "failed", reason: e.message, serviceId: state.running };
  } finally {
    state.running = null;
  }
  showOutcome(outcome, record);
  return outcome;
}

/// Charges `minor` units of the terminal's currency. `reference`: the
/// merchant system's order being paid, when the amount comes from one
/// (sent as SaleReferenceID); an order picker calls this with the order's
/// total and reference.
export async function charge(minor, reference) {
  const amount = { minor, currency: state.currency.code, decimals: state.currency.decimals };
  return run("Payment", { kind: "payment", amount, reference }, (ids) =>
    paymentRequest(ids, { amount, at: new Date(), reference }),
  );
}

async function refund(original, amount, supervisorCode) {
  await run("Refund", { kind: "refund", amount, reference: original.TransactionID }, (ids) =>
    paymentRequest(ids, { amount, at: new Date(), refund: { original, supervisorCode } }),
  );
}

const BANNERS = {
  approved: ["APPROVED", "ok"],
  declined: ["DECLINED", "bad"],
  cancelled: ["CANCELLED", "bad"],
  notReceived: ["NOT SENT", "bad"],
  unknown: ["OUTCOME UNKNOWN", "warn"],
  rejected: ["REFUSED", "bad"],
  failed: ["FAILED", "bad"],
  inProgress: ["STILL RUNNING", "warn"],
  inconsistent: ["NOT THIS PHONE'S", "warn"],
};

/// Conditions that mean the card or its issuer said no.
const DECLINES = ["Refusal", "WrongPIN", "InvalidCard", "PaymentRestriction"];

function bannerOf(outcome) {
  const s = outcome.summary;
  if (s) {
    if (s.approved) return "approved";
    if (DECLINES.includes(s.condition)) return "declined";
    return s.condition === "Aborted" || s.condition === "Cancel" ? "cancelled" : "failed";
  }
  return outcome.state in BANNERS ? outcome.state : "failed";
}

/// The result screen for `outcome` of exchange `record` (when known).
function showOutcome(outcome, record) {
  const summary = outcome.summary;
  const [text, tone] = BANNERS[bannerOf(outcome)];
  const banner = $("result-banner");
  banner.textContent = record?.kind === "refund" && summary?.approved ? "REFUNDED" : text;
  banner.className = `banner ${tone}`;
  const decimals = record?.amount?.decimals ?? state.currency?.decimals ?? 2;
  let amount = record?.amount ? money(record.amount.minor, record.amount.currency, decimals) : "";
  if (summary?.approved && summary.authorized !== null && summary.currency) {
    amount = money(minorAmount(summary.authorized, decimals), summary.currency, decimals);
  }
  $("result-amount").textContent = amount;
  $("result-reason").textContent = summary?.approved ? "" : plainReason(outcome);
  $("result-advice").textContent = summary && !summary.approved ? advice(summary.condition) : "";
  details($("result-details"), [
    ["Card", summary?.maskedPan ? [summary.brand, summary.maskedPan].filter(Boolean).join(" ") : null],
    ["Approval code", summary?.approvalCode],
    ["Terminal transaction", summary?.transactionId],
    ["ServiceID", outcome.serviceId],
    ["Answer", outcome.state === "recovered" ? "asked for with TransactionStatus after it was lost" : null],
  ]);
  $("result-office").textContent = "";
  const receipt = summary?.receipt ?? [];
  $("receipt").textContent = receipt.join("\n");
  $("receipt").hidden = receipt.length === 0;
  show("result");
}

/// The terminal's reason in plain words: its message, then the condition
/// nexo names and the host's response code (`Insufficient funds
/// (Refusal, response code 51)`).
function plainReason(outcome) {
  const s = outcome.summary;
  if (!s) return outcome.reason ?? "";
  const why = [s.condition, s.responseCode && `response code ${s.responseCode}`].filter(Boolean).join(", ");
  if (!s.message) return why;
  const message = `${s.message.charAt(0).toUpperCase()}${s.message.slice(1)}`;
  return why ? `${message} (${why})` : message;
}

// ---------------------------------------------------------------- history

const STATE_TEXT = {
  sent: "sent, no answer yet",
  answered: "answered",
  recovered: "answer recovered",
  notReceived: "never received",
  unknown: "outcome unknown",
  rejected: "refused unread",
  failed: "failed",
};

function recordTitle(r) {
  const amount = r.amount ? money(r.amount.minor, r.amount.currency, r.amount.decimals) : "";
  const result = r.summary ? (r.summary.approved ? "APPROVED" : "DECLINED") : STATE_TEXT[r.state] ?? r.state;
  return [r.kind, amount, result].filter(Boolean).join(" · ");
}

async function showHistory() {
  const list = $("history-list");
  const records = (await state.store.history()).filter((r) => r.kind === "payment" || r.kind === "refund");
  list.replaceChildren();
  if (!records.length) list.append(element("li", "No payments yet.", "hint"));
  for (const r of records) {
    const item = element("li", undefined, r.summary?.approved ? "ok" : r.state === "unknown" || r.state === "sent" ? "warn" : "bad");
    item.dataset.serviceId = r.serviceId;
    item.append(element("b", recordTitle(r)));
    const when = new Date(r.startedAt).toLocaleString();
    item.append(element("small", `${when} · ServiceID ${r.serviceId}${r.summary?.transactionId ? ` · ${r.summary.transactionId}` : ""}`));
    if (r.reason && !r.summary?.approved) item.append(element("small", r.reason));
    const check = element("button", "Status", "secondary");
    check.type = "button";
    check.addEventListener("click", () => lookUp(r.serviceId));
    item.append(check);
    list.append(item);
  }
  show("history");
}

/// Asks the terminal about exchange `serviceId` and shows its answer.
async function lookUp(serviceId) {
  $("history-error").textContent = "";
  try {
    const outcome = await state.terminal.check(serviceId);
    const record = await state.store.exchange(serviceId);
    showOutcome({ ...outcome, serviceId }, record);
  } catch (e) {
    $("history-error").textContent = `Asking the terminal failed: ${e.message}`;
  }
}

/// Exchanges a previous page left without an outcome (the page was closed
/// or reloaded while a payment ran): asked for at the terminal, never
/// sent again.
async function resolveLeftovers() {
  const open = (await state.store.history()).filter(
    (r) => (r.kind === "payment" || r.kind === "refund") && r.state === "sent",
  );
  for (const r of open) {
    try {
      await state.terminal.check(r.serviceId);
    } catch {
      await state.store.finish(r.serviceId, {
        state: "unknown",
        reason: "The page closed before the answer came: check its status.",
      });
    }
  }
}

// ----------------------------------------------------------------- refund

async function showRefund() {
  const select = $("refund-original");
  const payments = (await state.store.history()).filter(
    (r) => r.kind === "payment" && r.summary?.approved && r.summary.transactionId && r.summary.transactionTime,
  );
  select.replaceChildren();
  for (const r of payments) {
    const option = element("option", `${r.summary.transactionId} · ${money(r.amount.minor, r.amount.currency, r.amount.decimals)}`);
    option.value = r.serviceId;
    select.append(option);
  }
  select.append(Object.assign(element("option", "Another payment (type it)"), { value: "" }));
  await fillRefund();
  show("refund");
}

async function fillRefund() {
  const serviceId = $("refund-original").value;
  $("refund-manual").hidden = serviceId !== "";
  if (serviceId) {
    const r = await state.store.exchange(serviceId);
    $("refund-amount").value = formatAmount(r.amount.minor, r.amount.decimals);
  }
}

async function submitRefund() {
  $("refund-error").textContent = "";
  const amount = amountOf($("refund-amount"), "refund-error");
  if (!amount) return;
  const code = $("refund-code").value.trim();
  if (!/^\d{6}$/.test(code)) {
    $("refund-error").textContent = "The supervisor code is the 6 digits the supervisor's authenticator shows.";
    return;
  }
  let original;
  const serviceId = $("refund-original").value;
  if (serviceId) {
    const r = await state.store.exchange(serviceId);
    original = { TransactionID: r.summary.transactionId, TimeStamp: r.summary.transactionTime };
  } else {
    const id = $("refund-txn").value.trim();
    const time = $("refund-time").value.trim();
    if (!id || Number.isNaN(Date.parse(time))) {
      $("refund-error").textContent = "Give the terminal transaction and its time, as on the receipt.";
      return;
    }
    original = { TransactionID: id, TimeStamp: time };
  }
  $("refund-code").value = "";
  await refund(original, amount, code);
}

// ---------------------------------------------------------- open orders

function showOfficeForm(error) {
  $("office-setup").hidden = false;
  $("office-orders").hidden = true;
  $("office-url").value = state.office?.url ?? "";
  $("office-token").value = "";
  $("office-error").textContent = error ?? "";
  show("orders");
}

async function saveOffice(office) {
  state.office = office;
  await state.store.set("office", office);
}

async function submitOffice() {
  try {
    await saveOffice(parseOffice($("office-url").value, $("office-token").value));
  } catch (e) {
    $("office-error").textContent = e.message;
    return;
  }
  await showOrders();
}

async function forgetOffice() {
  state.office = null;
  await state.store.set("office", null);
  showOfficeForm();
}

/// Most reports kept for sending again: a phone charges a few orders
/// while its back office is away, not hundreds.
const MAX_UNSENT = 50;

/// Keeps the report of payment `payment` of order `order` (outcome
/// `outcome`) that the back office did not receive, to send it again.
async function keepUnsent(order, payment, outcome) {
  const unsent = ((await state.store.get("officeUnsent")) ?? []).slice(-(MAX_UNSENT - 1));
  unsent.push({ url: state.office.url, order, payment, outcome });
  await state.store.set("officeUnsent", unsent);
}

/// Sends the reports the back office did not receive again; those it
/// answers (whatever it says) are done, the others kept.
async function sendUnsent() {
  const unsent = (await state.store.get("officeUnsent")) ?? [];
  const kept = [];
  for (const r of unsent) {
    if (r.url !== state.office.url) {
      kept.push(r);
      continue;
    }
    try {
      await report(state.office, r.order, r.payment, r.outcome);
    } catch (e) {
      if (!(e instanceof OfficeError) || e.status === 0 || e.status >= 500) kept.push(r);
    }
  }
  await state.store.set("officeUnsent", kept);
  return kept.filter((r) => r.url === state.office.url).length;
}

/// The back office's open orders, each with a button that charges it.
async function showOrders() {
  if (!state.office) {
    showOfficeForm();
    return;
  }
  $("office-setup").hidden = true;
  $("office-orders").hidden = false;
  $("office-line").textContent = `Back office ${state.office.url}`;
  $("orders-error").textContent = "";
  const unsent = await sendUnsent();
  if (unsent) $("orders-error").textContent = `${unsent} payment report(s) could not be sent to the back office yet; they are sent again each time this list is opened.`;
  const list = $("orders-list");
  list.replaceChildren(element("li", "Asking the back office…", "hint"));
  show("orders");
  let orders;
  try {
    orders = await openOrders(state.office);
  } catch (e) {
    list.replaceChildren();
    $("orders-error").textContent = e.message;
    return;
  }
  list.replaceChildren();
  if (!orders.length) list.append(element("li", "No open orders.", "hint"));
  for (const o of orders) {
    const item = element("li");
    item.dataset.order = String(o.id);
    item.append(element("b", `${o.label} · ${money(o.outstanding, o.currency_code, o.decimals)}`));
    const lines = (o.lines ?? []).map((l) => `${l.quantity} × ${l.name}`).join(", ");
    item.append(element("small", `${o.reference}${lines ? ` · ${lines}` : ""}`));
    const button = element("button", `Charge ${money(o.outstanding, o.currency_code, o.decimals)}`);
    button.type = "button";
    button.addEventListener("click", () => chargeOrder(o));
    item.append(button);
    list.append(item);
  }
}

const OFFICE_TEXT = {
  approved: "The back office has the payment: the order is paid.",
  awaiting_confirmation: "The back office is waiting for the host to confirm this payment before it marks the order paid.",
  declined: "The back office recorded the payment as not made: the order is still open.",
  failed: "The back office recorded the payment as not made: the order is still open.",
  unknown: "The back office keeps the order blocked until this payment's outcome is known.",
};

/// Takes order `o` at the back office, charges it with its reference, and
/// tells the back office what the terminal said.
async function chargeOrder(o) {
  $("orders-error").textContent = "";
  if (!state.currency) await refreshInfo();
  if (!state.currency) {
    $("orders-error").textContent = "The terminal has not told its currency yet. Try again in a moment.";
    return;
  }
  if (o.currency_code !== state.currency.code) {
    $("orders-error").textContent = `This order is in ${o.currency_code}; the terminal takes ${state.currency.code}.`;
    return;
  }
  let taken;
  try {
    taken = await takeOrder(state.office, o.id, state.pairing.poiId);
  } catch (e) {
    $("orders-error").textContent = e.message;
    return;
  }
  const outcome = await charge(taken.amount, taken.reference);
  $("result-office").textContent = "Telling the back office…";
  try {
    const answer = await report(state.office, o.id, taken.payment, outcome);
    $("result-office").textContent = OFFICE_TEXT[answer.status] ?? `The back office says: ${answer.status}.`;
  } catch (e) {
    const why = e instanceof OfficeError ? e.message : String(e);
    const answered = e instanceof OfficeError && e.status > 0 && e.status < 500;
    if (!answered) await keepUnsent(o.id, taken.payment, outcome);
    $("result-office").textContent = answered
      ? `The back office refused the report (${why}).`
      : `The back office was not told (${why}): this phone tells it when the Orders list is opened next.`;
  }
}

// ---------------------------------------------------------------- screens

function showTerminal() {
  const p = state.pairing;
  details($("terminal-details"), [
    ["POIID", p.poiId],
    ["Address", hostPort(p)],
    ["Certificate fingerprint (SHA-256)", fingerprintText(p.fingerprint)],
    ["Key", `${p.key.keyIdentifier} version ${p.key.keyVersion}`],
    ["Currency", p.currency?.code],
    ["Paired", new Date(p.pairedAt).toLocaleString()],
  ]);
  show("terminal");
}

async function unpair() {
  await state.store.forgetPairing();
  state.terminal?.close();
  state.terminal = null;
  state.pairing = null;
  state.currency = null;
  $("terminal-line").textContent = "Not paired";
  show("pair");
}

function wire() {
  $("pair-form").addEventListener("submit", (e) => {
    e.preventDefault();
    pair($("pair-code").value);
  });
  $("paired-done").addEventListener("click", () => show("pay"));
  $("pay-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("pay-error").textContent = "";
    if (!state.currency) await refreshInfo();
    if (!state.currency) return;
    const amount = amountOf($("amount"), "pay-error");
    if (amount) await charge(amount.minor);
  });
  $("refund-original").addEventListener("change", fillRefund);
  $("refund-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submitRefund();
  });
  $("abort").addEventListener("click", async () => {
    if (!state.running) return;
    $("abort").disabled = true;
    try {
      await state.terminal.abort(state.running);
    } catch (e) {
      onLines([`Cancelling failed: ${e.message}`]);
      $("abort").disabled = false;
    }
  });
  $("result-done").addEventListener("click", () => {
    $("amount").value = "";
    show("pay");
  });
  $("status-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("status-id").value.trim();
    if (id) lookUp(id);
  });
  $("unpair").addEventListener("click", unpair);
  $("office-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submitOffice();
  });
  $("orders-refresh").addEventListener("click", showOrders);
  $("office-forget").addEventListener("click", forgetOffice);
  for (const b of $("tabs").querySelectorAll("button")) {
    b.addEventListener("click", () => {
      const view = b.dataset.view;
      if (view === "history") showHistory();
      else if (view === "orders") showOrders();
      else if (view === "refund") showRefund();
      else if (view === "terminal") showTerminal();
      else show(view);
    });
  }
}

/// The service worker keeps the app's files for when the terminal's
/// network is briefly away. Browsers register one only for an origin whose
/// certificate they trust; with a certificate accepted by hand the app
/// runs without it.
async function registerWorker() {
  if (!("serviceWorker" in navigator)) return;
  const url = "/app/sw.js";
  // Where the browser enforces Trusted Types (the policy asks for them), a
  // script URL goes through a policy that allows this one only.
  const trusted = globalThis.trustedTypes
    ? globalThis.trustedTypes
        .createPolicy("posnet-app", {
          createScriptURL: (u) => {
            if (u !== url) throw new TypeError(`not the app's service worker: ${u}`);
            return u;
          },
        })
        .createScriptURL(url)
    : url;
  try {
    await navigator.serviceWorker.register(trusted, { scope: "/app/" });
  } catch (e) {
    console.info(`posnet: no offline copy of the app (${e.message})`);
  }
}

async function main() {
  wire();
  registerWorker();
  await setUpScanner();
  try {
    state.store = await Store.open();
  } catch (e) {
    notice(`This browser keeps no data for this page (${e.message}): pairing is not possible in a private window.`);
    return;
  }
  state.office = (await state.store.get("office")) ?? null;
  // A link from the back office's devices page carries its address and
  // this phone's token in the fragment (never sent to a server): kept
  // like the pairing, then taken off the address bar.
  if (location.hash) {
    try {
      const office = officeFromHash(location.hash);
      if (office) await saveOffice(office);
    } catch (e) {
      notice(e.message);
    }
    history.replaceState(null, "", location.pathname);
  }
  const pairing = await state.store.pairing();
  if (!pairing) {
    show("pair");
    return;
  }
  if (!sameTerminal(pairing, location)) {
    // Kept per origin, so this cannot happen unless the address changed.
    notice(`This phone was paired with the terminal at ${hostPort(pairing)}; pair again with this one.`);
    show("pair");
    return;
  }
  await start(pairing);
  show("pay");
  await resolveLeftovers();
}

main();
