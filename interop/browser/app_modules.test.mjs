// The phone app's own modules (crates/terminal/src/ecr/app/*.js, standard
// ES modules on globalThis.crypto.subtle) in Node: its WebCrypto nexo
// message security against posnet's (`posnet crypto nexo`, $POSNET_BIN)
// both ways, Latin-1 passphrases included; its reading of pairing codes;
// and its reading of nexo answers against the nexo crate's fixtures (the
// examples of docs/ecr-api.md); its back office setting and the report of
// an outcome it sends the back office.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { POSNET_BIN } from "./deployment.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const app = path.join(here, "..", "..", "crates", "terminal", "src", "ecr", "app");
const { deriveKey, secure, open, NexoError } = await import(path.join(app, "nexo.js"));
const { parseCode, fingerprintText, sameTerminal } = await import(path.join(app, "pairing.js"));
const messages = await import(path.join(app, "messages.js"));
const office = await import(path.join(app, "office.js"));

const fixtures = path.join(here, "..", "..", "crates", "nexo", "tests", "fixtures");
const fixture = (name) => JSON.parse(readFileSync(path.join(fixtures, name), "utf8"));

const ROUNDS = 10;
const KEY = { keyIdentifier: "posnet-0123456789ab", keyVersion: 2 };

function posnet(direction, input, passphrase) {
  const r = spawnSync(
    POSNET_BIN,
    ["crypto", "nexo", direction, "--key-id", KEY.keyIdentifier, "--key-version", String(KEY.keyVersion)],
    { input, env: { ...process.env, POSNET_NEXO_PASSPHRASE: passphrase }, encoding: "utf8" },
  );
  return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr };
}

function payment(i) {
  const request = messages.paymentRequest(
    { saleId: "PWA-0a1b2c3d", serviceId: String(i).padStart(10, "0"), poiId: "T0000001" },
    { amount: { minor: 1250 + i, currency: "EUR", decimals: 2 }, at: new Date(0) },
  );
  // Variable length, non-ASCII text included: padding and UTF-8.
  request.SaleToPOIRequest.PaymentRequest.SaleData.SaleReferenceID = "é€ " + randomBytes(i * 7).toString("base64");
  return JSON.stringify(request);
}

function flipBit(b64, byteIndex) {
  const bytes = Buffer.from(b64, "base64");
  bytes[byteIndex] ^= 0x01;
  return bytes.toString("base64");
}

for (const passphrase of ["upIVLzTbcGR2HiIsrj2ddFxt7pLTxrkV", "pässwörd ÿ Latin-1"]) {
  test(`the app secures, posnet opens (passphrase ${JSON.stringify(passphrase)})`, async () => {
    const key = await deriveKey(passphrase, KEY.keyIdentifier, KEY.keyVersion);
    for (let i = 0; i < ROUNDS; i++) {
      const plaintext = payment(i);
      const r = posnet("decrypt", await secure(key, plaintext), passphrase);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, plaintext);
    }
  });

  test(`posnet secures, the app opens (passphrase ${JSON.stringify(passphrase)})`, async () => {
    const key = await deriveKey(passphrase, KEY.keyIdentifier, KEY.keyVersion);
    for (let i = 0; i < ROUNDS; i++) {
      const plaintext = payment(i);
      const r = posnet("encrypt", plaintext, passphrase);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(await open(key, r.stdout), plaintext);
    }
  });
}

test("a flipped bit, another passphrase or another key fails on both sides", async () => {
  const passphrase = "posnet-interop-passphrase";
  const key = await deriveKey(passphrase, KEY.keyIdentifier, KEY.keyVersion);
  const ours = JSON.parse(await secure(key, payment(3))).SaleToPOIRequest;
  const tampered = JSON.stringify({ SaleToPOIRequest: { ...ours, NexoBlob: flipBit(ours.NexoBlob, 5) } });
  const r = posnet("decrypt", tampered, passphrase);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /authentication failed/);
  await assert.rejects(open(key, tampered), (e) => e instanceof NexoError && e.reason === "authentication");

  const theirs = JSON.parse(posnet("encrypt", payment(4), passphrase).stdout).SaleToPOIRequest;
  const badHmac = { ...theirs, SecurityTrailer: { ...theirs.SecurityTrailer, Hmac: flipBit(theirs.SecurityTrailer.Hmac, 0) } };
  await assert.rejects(open(key, JSON.stringify({ SaleToPOIRequest: badHmac })), { reason: "authentication" });

  const other = await deriveKey("another passphrase", KEY.keyIdentifier, KEY.keyVersion);
  await assert.rejects(open(other, JSON.stringify({ SaleToPOIRequest: theirs })), { reason: "authentication" });
  const otherVersion = await deriveKey(passphrase, KEY.keyIdentifier, KEY.keyVersion + 1);
  await assert.rejects(open(otherVersion, JSON.stringify({ SaleToPOIRequest: theirs })), { reason: "key" });
});

test("passphrases beyond Latin-1 are refused, as posnet refuses them", async () => {
  await assert.rejects(deriveKey("pass €", "k", 1), { reason: "passphrase" });
  const r = posnet("encrypt", payment(1), "pass €");
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /Latin-1/);
});

test("the derived keys cannot be read back", async () => {
  const key = await deriveKey("posnet-interop-passphrase", "k", 1);
  assert.equal(key.aesKey.extractable, false);
  assert.equal(key.hmacKey.extractable, false);
  await assert.rejects(globalThis.crypto.subtle.exportKey("raw", key.aesKey));
});

test("pairing codes are read as posnet writes them, and refused as posnet refuses them", () => {
  const fp = "ab".repeat(32);
  // crates/nexo/src/pairing.rs's sample, with the characters that need escaping.
  const code = `posnet-pair://192.168.1.20:8443?fp=${fp}&poi=P400-T0000001&kid=phone-1&kv=3&pass=a+b%26c%3Dd%25%C3%A9`;
  assert.deepEqual(parseCode(`  ${code}\n`), {
    host: "192.168.1.20",
    port: 8443,
    fingerprint: fp,
    poiId: "P400-T0000001",
    keyIdentifier: "phone-1",
    keyVersion: 3,
    passphrase: "a b&c=d%é",
  });
  assert.equal(parseCode(code.replace("192.168.1.20:8443", "[fe80::1]:8443")).host, "fe80::1");
  assert.equal(fingerprintText("ab01".repeat(16)), "AB:01:".repeat(16).slice(0, -1));
  const refusals = [
    ["https://192.168.1.20:8443/?fp=", /must start with posnet-pair/],
    [code.replace(":8443", ""), /not host:port/],
    [code.replace(":8443", ":0"), /not host:port/],
    [`${code}&fp=${fp}`, /"fp" is repeated or unknown/],
    [`${code}&extra=1`, /"extra" is repeated or unknown/],
    [code.replace("&kv=3", ""), /lacks its "kv"/],
    [code.replace(`fp=${fp}`, "fp=abc"), /not 64 hexadecimal digits/],
    [code.replace("kv=3", "kv=-1"), /not a whole number/],
    [code.replace("poi=P400-T0000001", "poi=a+b"), /printable ASCII/],
    [code.replace("kid=phone-1", `kid=${"k".repeat(65)}`), /1 to 64 characters/],
    [code.replace(/pass=[^&]*/, "pass="), /"pass": empty/],
    [code.replace(/pass=[^&]*/, "pass=%E2%82%AC"), /beyond Latin-1/],
    [`${code}&x=${"y".repeat(1024)}`, /at most 1024/],
  ];
  for (const [bad, why] of refusals) assert.throws(() => parseCode(bad), why, bad);
});

test("the app pays only through the terminal that served it", () => {
  const pairing = parseCode(`posnet-pair://127.0.0.1:8443?fp=${"00".repeat(32)}&poi=T1&kid=k&kv=1&pass=p`);
  assert.ok(sameTerminal(pairing, new URL("https://127.0.0.1:8443/app/")));
  assert.ok(!sameTerminal(pairing, new URL("https://127.0.0.1:9443/app/")));
  assert.ok(!sameTerminal(pairing, new URL("https://localhost:8443/app/")));
  const v6 = parseCode(`posnet-pair://[::1]:443?fp=${"00".repeat(32)}&poi=T1&kid=k&kv=1&pass=p`);
  assert.ok(sameTerminal(v6, new URL("https://[::1]/app/")));
});

test("amounts are exact in minor units and written as posnet reads them", () => {
  assert.equal(messages.parseAmount("12.50", 2), 1250);
  assert.equal(messages.parseAmount(" 12,5 ", 2), 1250);
  assert.equal(messages.parseAmount("0.1", 2), 10);
  assert.equal(messages.parseAmount("1250", 0), 1250);
  for (const bad of ["12.505", "1.5x", "-1", "", "1e3", "12345678901234"]) assert.equal(messages.parseAmount(bad, 2), null, bad);
  assert.equal(messages.parseAmount("1.5", 0), null);
  assert.equal(messages.formatAmount(5, 2), "0.05");
  assert.equal(messages.formatAmount(1234, 3), "1.234");
  assert.equal(messages.formatAmount(1250, 0), "1250");
  assert.equal(JSON.stringify(messages.majorAmount(1250, 2)), "12.5");
  assert.equal(JSON.stringify(messages.majorAmount(10, 2)), "0.1");
  assert.equal(JSON.stringify(messages.majorAmount(999999999999999, 2)), "9999999999999.99");
  assert.equal(messages.minorAmount(9999999999999.99, 2), 999999999999999);
  assert.equal(messages.minorAmount(0.29, 2), 29);
});

test("requests are the ones docs/ecr-api.md shows", () => {
  const ids = { saleId: "ECR-1", serviceId: "0314092653", poiId: "posnet-terminal-1" };
  const built = messages.paymentRequest(ids, {
    amount: { minor: 1250, currency: "EUR", decimals: 2 },
    at: new Date("2025-03-14T09:26:53.000Z"),
  });
  const expected = fixture("requests/payment.json");
  delete expected.SaleToPOIRequest.PaymentRequest.SaleData.OperatorID;
  expected.SaleToPOIRequest.PaymentRequest.SaleData.SaleTransactionID.TransactionID = ids.serviceId;
  assert.deepEqual(built, expected);

  const refund = messages.paymentRequest(ids, {
    amount: { minor: 250, currency: "EUR", decimals: 2 },
    at: new Date(0),
    reference: "order-17",
    refund: { original: { TransactionID: "000001.000002", TimeStamp: "2025-03-14T09:26:58.000Z" }, supervisorCode: "123456" },
  }).SaleToPOIRequest.PaymentRequest;
  assert.equal(refund.PaymentData.PaymentType, "Refund");
  assert.equal(refund.SaleData.SaleToAcquirerData, "supervisorCode=123456");
  assert.equal(refund.SaleData.SaleReferenceID, "order-17");
  assert.deepEqual(refund.PaymentTransaction.OriginalPOITransaction, {
    POIID: ids.poiId,
    POITransactionID: { TransactionID: "000001.000002", TimeStamp: "2025-03-14T09:26:58.000Z" },
  });

  const status = messages.statusRequest({ ...ids, serviceId: "0314092801" }, "0314092653");
  assert.deepEqual(status, {
    ...fixture("requests/transaction-status.json"),
    SaleToPOIRequest: {
      ...fixture("requests/transaction-status.json").SaleToPOIRequest,
      TransactionStatusRequest: {
        ...fixture("requests/transaction-status.json").SaleToPOIRequest.TransactionStatusRequest,
        DocumentQualifier: ["CustomerReceipt"],
      },
    },
  });
  assert.deepEqual(messages.abortRequest({ ...ids, serviceId: "0314092700" }, "0314092653"), fixture("requests/abort.json"));
});

test("an answer is the request's only when its header, sale transaction, amount and currency match", () => {
  const request = fixture("requests/payment.json");
  const approved = fixture("responses/payment.json");
  assert.deepEqual(messages.checkResponse(request, approved), []);
  const fields = (answer) => messages.checkResponse(request, answer).map((m) => m.field);

  const other = structuredClone(approved);
  other.SaleToPOIResponse.MessageHeader.ServiceID = "0314092654";
  other.SaleToPOIResponse.MessageHeader.POIID = "another-terminal";
  assert.deepEqual(fields(other), ["ServiceID", "POIID"]);
  const amount = structuredClone(approved);
  amount.SaleToPOIResponse.PaymentResponse.PaymentResult.AmountsResp = { Currency: "USD", AuthorizedAmount: 1.25 };
  amount.SaleToPOIResponse.PaymentResponse.SaleData.SaleTransactionID.TransactionID = "27909";
  assert.deepEqual(fields(amount), ["SaleTransactionID", "Currency", "AuthorizedAmount"]);
  assert.match(messages.describeMismatches(messages.checkResponse(request, amount)), /Currency is "USD" where "EUR" was sent/);
  const noSale = structuredClone(approved);
  delete noSale.SaleToPOIResponse.PaymentResponse.SaleData;
  assert.deepEqual(fields(noSale), ["SaleTransactionID"]);

  // A refusal authorizes nothing: its amounts are not held against it.
  const declined = fixture("responses/payment-declined.json");
  assert.deepEqual(messages.checkResponse(request, declined), []);
});

test("a status answer tells the repeated answer, in progress, not found", () => {
  const request = fixture("requests/payment.json");
  const status = (name) => fixture(name).SaleToPOIResponse.TransactionStatusResponse;
  const repeated = messages.judgeStatus(request, status("responses/transaction-status.json"));
  assert.equal(repeated.kind, "answer");
  assert.equal(repeated.response.SaleToPOIResponse.PaymentResponse.PaymentResult.PaymentAcquirerData.ApprovalCode, "A1B2C3");
  assert.equal(messages.judgeStatus(request, status("responses/transaction-status-in-progress.json")).kind, "inProgress");
  assert.equal(messages.judgeStatus(request, status("responses/transaction-status-not-found.json")).kind, "notFound");
  const other = status("responses/transaction-status.json");
  other.RepeatedMessageResponse.RepeatedResponseMessageBody.PaymentResponse.PaymentResult.AmountsResp.AuthorizedAmount = 99;
  assert.deepEqual(
    messages.judgeStatus(request, other).mismatches.map((m) => m.field),
    ["AuthorizedAmount"],
  );
});

test("the terminal's words: reasons, progress, receipts, rejections", () => {
  const declined = fixture("responses/payment-declined.json").SaleToPOIResponse.PaymentResponse;
  assert.equal(messages.reason(declined.Response), "Refusal: insufficient funds (responseCode=51)");
  const summary = messages.paymentSummary(declined);
  assert.equal(summary.approved, false);
  assert.equal(summary.message, "insufficient funds");
  assert.equal(summary.responseCode, "51");
  assert.equal(summary.maskedPan, "627012******0026");
  assert.match(messages.advice(summary.condition), /another card/);

  const approved = messages.paymentSummary(fixture("responses/payment.json").SaleToPOIResponse.PaymentResponse);
  assert.deepEqual(approved.receipt, ["SALE", "CARD 627012******0018", "EUR 12.50", "APPROVED A1B2C3"]);
  assert.equal(approved.approvalCode, "A1B2C3");

  assert.deepEqual(messages.progressLines(fixture("requests/display.json")), ["Present card", "EUR 12.50"]);
  assert.deepEqual(messages.progressLines(fixture("requests/event.json")), ["CardInserted", "step=pinEntry", "PINEntry"]);
  assert.equal(messages.progressLines(fixture("requests/payment.json")), null);
  const header = fixture("requests/display.json").SaleToPOIRequest.MessageHeader;
  assert.ok(messages.concerns(header, "ECR-1", "0314092653"));
  assert.ok(!messages.concerns(header, "ECR-2", "0314092653"));
  assert.ok(!messages.concerns(header, "ECR-1", "0314092654"));

  assert.deepEqual(messages.rejection(fixture("replies/unreadable.reply.json")), {
    details: "unreadable message at byte 103 (line 5, column 23): expected value at line 5 column 23",
    security: false,
  });
  assert.equal(messages.rejection(fixture("requests/event.json")), null);
  assert.equal(messages.pairs("a=1&".repeat(100)).length, 32);
});

test("the back office setting, from a link or typed, and what the back office is told of an outcome", () => {
  const token = "ab".repeat(32);
  assert.deepEqual(office.parseOffice(" http://127.0.0.1:8600/ ", token.toUpperCase()), { url: "http://127.0.0.1:8600", token });
  assert.deepEqual(office.officeFromHash(`#office=http://192.168.1.10:8600&token=${token}`), { url: "http://192.168.1.10:8600", token });
  assert.equal(office.officeFromHash("#something=else"), null);
  for (const [url, t] of [["http://127.0.0.1:8600/orders", token], ["ftp://127.0.0.1", token], ["not a url", token], ["http://127.0.0.1:8600", "ab"]]) {
    assert.throws(() => office.parseOffice(url, t), office.OfficeError, `${url} ${t}`);
  }

  const approved = messages.paymentSummary(fixture("responses/payment.json").SaleToPOIResponse.PaymentResponse);
  assert.deepEqual(office.reportOf({ summary: approved, serviceId: "0000000007", state: "answered" }), {
    outcome: "approved",
    reason: null,
    service_id: "0000000007",
    poi_transaction_id: approved.transactionId,
    acquirer_terminal_id: "10000001",
    rrn: "407309000123",
    approval_code: "A1B2C3",
    masked_pan: "627012******0018",
  });
  const declined = messages.paymentSummary(fixture("responses/payment-declined.json").SaleToPOIResponse.PaymentResponse);
  const told = office.reportOf({ summary: declined, serviceId: "0000000008", state: "answered" });
  assert.equal(told.outcome, "declined");
  assert.equal(told.reason, "Refusal: insufficient funds (responseCode=51)");
  assert.equal(office.reportOf({ state: "unknown", reason: "lost", serviceId: "0000000009" }).outcome, "unknown");
  assert.equal(office.reportOf({ state: "failed", reason: "unreachable" }).outcome, "failed");
});
