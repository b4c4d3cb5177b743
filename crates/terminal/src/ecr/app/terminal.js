// The app as a nexo Sale system of the terminal that served it: every
// request secured with the pairing's key and posted to /nexo of this
// origin; progress read from the WebSocket /nexo/events; every answer
// checked against its request. A payment is never sent twice: when its
// answer is lost (a dropped connection, a timeout) or is not its own, the
// app asks the terminal with TransactionStatus what became of it, as
// posnet's command-line phone does (crates/phone/src/recovery.rs).

import { open, secure, isSecured, NexoError } from "./nexo.js";
import {
  abortRequest,
  checkHeader,
  checkResponse,
  concerns,
  describeMismatches,
  header,
  judgeStatus,
  paymentSummary,
  progressLines,
  reason,
  rejection,
  statusRequest,
} from "./messages.js";

/// Longest wait for a payment's answer: the terminal waits for the card
/// (60 s by default), the PIN and its host. Past it the answer is taken as
/// lost and asked for.
const PAYMENT_TIMEOUT_MS = 180_000;
/// Longest wait for any other answer.
const SHORT_TIMEOUT_MS = 20_000;
/// Asking what became of a payment: at once, then after pauses of 1, 2,
/// 4, then 8 s, at most 40 questions (about five minutes: the payment may
/// still wait for its card); at most 6 questions in a row that get no
/// answer at all.
const STATUS_ATTEMPTS = 40;
const STATUS_UNREACHED = 6;
/// How long a payment waits for the progress WebSocket to open before it
/// is sent without it.
const EVENTS_READY_MS = 3_000;

/// Pause before status question `n` (1-based): 0, then 1, 2, 4, 8, 8, ... s.
function statusPause(n) {
  return n <= 1 ? 0 : Math.min(1000 * 2 ** (n - 2), 8000);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/// A request got no answer, or one that is not its own: the terminal may
/// have acted on it.
class NoAnswer extends Error {
  constructor(message) {
    super(message);
    this.name = "NoAnswer";
  }
}

/// The terminal refused the message unread; `security` when for its key
/// (revoked or re-keyed: pair again).
class Rejected extends Error {
  constructor(details, security) {
    super(
      security
        ? `The terminal no longer accepts this phone's key (${details}): pair again with the code the terminal shows.`
        : `The terminal rejected the message unread: ${details}`,
    );
    this.name = "Rejected";
    this.security = security;
  }
}

/// The terminal's WebSocket of progress notifications, opened again after
/// a drop (pauses of 1 s doubling to 30 s: one socket, never a storm)
/// until closed.
class Events {
  constructor(url, key, onMessage) {
    this.url = url;
    this.key = key;
    this.onMessage = onMessage;
    this.closed = false;
    this.pause = 1000;
    this.waiters = [];
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      this.pause = 1000;
      for (const resolve of this.waiters.splice(0)) resolve(true);
    };
    socket.onmessage = async (event) => {
      if (typeof event.data !== "string") return;
      try {
        // Plain notifications are not trusted: anyone could push them.
        this.onMessage(JSON.parse(await open(this.key, event.data)));
      } catch {
        // Not for this key, or not a message: not shown.
      }
    };
    socket.onclose = () => {
      if (this.closed) return;
      setTimeout(() => this.connect(), this.pause);
      this.pause = Math.min(this.pause * 2, 30_000);
    };
  }

  /// Resolves true once open, false after `ms`.
  ready(ms) {
    if (this.socket?.readyState === WebSocket.OPEN) return Promise.resolve(true);
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      setTimeout(() => resolve(false), ms);
    });
  }

  close() {
    this.closed = true;
    this.socket?.close();
  }
}

/// One paired terminal: `pairing` as the store keeps it (with its `key`),
/// `saleId` this installation's, `store` the app's Store.
export class Terminal {
  constructor({ pairing, saleId, store, origin = globalThis.location.origin }) {
    this.pairing = pairing;
    this.key = pairing.key;
    this.saleId = saleId;
    this.store = store;
    this.origin = origin;
    this.listeners = new Set();
    this.events = null;
  }

  /// Starts following the terminal's notifications.
  listen() {
    if (this.events) return;
    const url = new URL("/nexo/events", this.origin);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("kid", this.key.keyIdentifier);
    url.searchParams.set("kv", String(this.key.keyVersion));
    this.events = new Events(url.href, this.key, (message) => {
      for (const listener of this.listeners) listener(message);
    });
  }

  close() {
    this.events?.close();
    this.events = null;
  }

  /// Calls `onLines(lines)` with the progress of exchange `serviceId`
  /// until the returned function is called.
  follow(serviceId, onLines) {
    const listener = (message) => {
      const header = (message.SaleToPOIRequest ?? message.SaleToPOIResponse)?.MessageHeader;
      if (!concerns(header, this.saleId, serviceId)) return;
      const lines = progressLines(message);
      if (lines) onLines(lines);
    };
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  ids(serviceId) {
    return { saleId: this.saleId, serviceId, poiId: this.pairing.poiId };
  }

  /// The terminal's own facts (currency, name), or null when unreachable.
  async info() {
    try {
      const r = await fetch(new URL("/app/terminal.json", this.origin), { cache: "no-store" });
      return r.ok ? await r.json() : null;
    } catch {
      return null;
    }
  }

  /// Posts `request` secured; its answer opened and checked. Throws
  /// NoAnswer when none came or it is not the request's (the terminal may
  /// have acted on it), Rejected when the terminal refused it unread.
  async post(request, timeoutMs) {
    const envelope = await secure(this.key, JSON.stringify(request));
    let text;
    try {
      const r = await fetch(new URL("/nexo", this.origin), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: envelope,
        cache: "no-store",
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (!r.ok) throw new NoAnswer(`the terminal answered HTTP ${r.status}`);
      text = await r.text();
    } catch (e) {
      if (e instanceof NoAnswer) throw e;
      throw new NoAnswer(e.name === "TimeoutError" ? "no answer in time" : "the connection to the terminal failed");
    }
    if (text === "") return null;
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      throw new NoAnswer("the answer is not JSON");
    }
    if (!isSecured(value)) {
      const refused = rejection(value);
      if (refused) throw new Rejected(refused.details, refused.security);
      throw new NoAnswer("the answer is not secured with this pairing's key");
    }
    let answer;
    try {
      answer = JSON.parse(await open(this.key, text));
    } catch (e) {
      throw new NoAnswer(e instanceof NexoError ? `unusable answer: ${e.message}` : String(e));
    }
    const mismatches = checkResponse(request, answer);
    if (mismatches.length) throw new NoAnswer(`the answer is not this request's: ${describeMismatches(mismatches)}`);
    return answer;
  }

  /// A payment or refund: `build(ids)` makes the request once its
  /// ServiceID is taken and the exchange recorded (`record`: what the
  /// history shows). `onLines` gets the terminal's progress,
  /// `onStarted(serviceId)` the ServiceID as soon as it is taken. The
  /// outcome: `{serviceId, state, summary?, reason}`.
  async pay(record, build, { onLines = () => {}, onStarted = () => {} } = {}) {
    const serviceId = await this.store.begin({ ...record, poiId: this.pairing.poiId });
    onStarted(serviceId);
    const request = build(this.ids(serviceId));
    const unfollow = this.follow(serviceId, onLines);
    try {
      await this.events?.ready(EVENTS_READY_MS);
      let answer;
      let lost = null;
      try {
        answer = await this.post(request, PAYMENT_TIMEOUT_MS);
        if (!answer) lost = "an empty answer";
      } catch (e) {
        if (e instanceof Rejected) return this.finish(serviceId, { state: "rejected", reason: e.message });
        // Anything but NoAnswer failed before the request left (securing it).
        if (!(e instanceof NoAnswer)) return this.finish(serviceId, { state: "failed", reason: `Not sent: ${e.message}` });
        lost = e.message;
      }
      if (lost !== null) {
        onLines([`The answer was lost (${lost}): asking the terminal what became of it`]);
        return this.recover(serviceId, request, lost, onLines);
      }
      return this.finish(serviceId, this.outcome(answer, "answered"));
    } finally {
      unfollow();
    }
  }

  outcome(answer, state) {
    const summary = paymentSummary(answer.SaleToPOIResponse.PaymentResponse);
    return { state, summary, reason: summary.reason };
  }

  async finish(serviceId, outcome) {
    await this.store.finish(serviceId, outcome);
    return { serviceId, ...outcome };
  }

  /// Asks with TransactionStatus what became of `request` (ServiceID
  /// `serviceId`), never sending it again.
  async recover(serviceId, request, lost, onLines = () => {}) {
    let unreached = 0;
    let why = lost;
    for (let asked = 1; asked <= STATUS_ATTEMPTS && unreached < STATUS_UNREACHED; asked++) {
      await sleep(statusPause(asked));
      let status;
      try {
        status = await this.statusOf(serviceId);
        unreached = 0;
      } catch (e) {
        if (e instanceof Rejected && e.security) break;
        unreached += 1;
        why = e.message;
        continue;
      }
      const verdict = judgeStatus(request, status);
      switch (verdict.kind) {
        case "answer":
          return this.finish(serviceId, this.outcome(verdict.response, "recovered"));
        case "notFound":
          return this.finish(serviceId, {
            state: "notReceived",
            reason: "The terminal never received this payment: no money moved. You may start it again.",
          });
        case "inProgress":
          onLines(["Still running at the terminal"]);
          why = "the terminal still works on it";
          break;
        case "inconsistent":
          why = `the terminal's record does not match: ${describeMismatches(verdict.mismatches)}`;
          break;
        default:
          why = verdict.reason;
      }
    }
    return this.finish(serviceId, {
      state: "unknown",
      reason:
        `The outcome is unknown: the answer was lost (${lost}) and asking the terminal failed (${why}). ` +
        "Do not take the payment again: check its status later from the history.",
    });
  }

  /// The terminal's TransactionStatusResponse about this installation's
  /// exchange `reference`.
  async statusOf(reference) {
    const serviceId = await this.store.begin({ kind: "status", reference, poiId: this.pairing.poiId });
    const request = statusRequest(this.ids(serviceId), reference);
    try {
      const answer = await this.post(request, SHORT_TIMEOUT_MS);
      const status = answer?.SaleToPOIResponse?.TransactionStatusResponse;
      if (!status) throw new NoAnswer("the terminal's answer carries no TransactionStatusResponse");
      await this.store.finish(serviceId, { state: "answered", reason: reason(status.Response ?? {}) });
      return status;
    } catch (e) {
      await this.store.finish(serviceId, { state: "failed", reason: e.message });
      throw e;
    }
  }

  /// Looks exchange `reference` up at the terminal (the history's Check
  /// status): a payment whose outcome was unknown is completed with what
  /// the terminal says. `{state, summary?, reason}`.
  async check(reference) {
    const record = await this.store.exchange(reference);
    const status = await this.statusOf(reference);
    const response = status.Response ?? {};
    const repeated = status.RepeatedMessageResponse;
    const payment = repeated?.RepeatedResponseMessageBody?.PaymentResponse;
    if (response.Result === "Success" && payment) {
      const mismatches = checkHeader(header("Payment", this.ids(reference)), repeated.MessageHeader);
      if (mismatches.length) return { state: "inconsistent", reason: describeMismatches(mismatches) };
      const outcome = { summary: paymentSummary(payment), reason: reason(payment.Response ?? {}) };
      if (record && (record.state === "sent" || record.state === "unknown")) {
        await this.store.finish(reference, { ...outcome, state: "recovered" });
      }
      return { ...outcome, state: "reported" };
    }
    if (response.ErrorCondition === "NotFound" && record && (record.state === "sent" || record.state === "unknown")) {
      await this.store.finish(reference, {
        state: "notReceived",
        reason: "The terminal never received this payment: no money moved.",
      });
    }
    return { state: response.ErrorCondition === "InProgress" ? "inProgress" : "failed", reason: reason(response) };
  }

  /// Aborts this installation's payment `reference` while it waits for
  /// its card. The abort has no answer of its own: the payment is
  /// answered Aborted.
  async abort(reference) {
    const serviceId = await this.store.begin({ kind: "abort", reference, poiId: this.pairing.poiId });
    try {
      await this.post(abortRequest(this.ids(serviceId), reference), SHORT_TIMEOUT_MS);
      await this.store.finish(serviceId, { state: "answered", reason: "sent" });
    } catch (e) {
      await this.store.finish(serviceId, { state: "failed", reason: e.message });
      throw e;
    }
  }
}
