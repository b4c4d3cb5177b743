// posnet's nexo message security against Adyen's Node library
// (@adyen/api-library, NexoCrypto): a message secured by one is opened by
// the other, both ways, and a flipped bit fails authentication on both.
// Runs the posnet binary at $POSNET_BIN.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const NexoCrypto = require("@adyen/api-library/lib/src/security/nexoCrypto").default;

const here = path.dirname(fileURLToPath(import.meta.url));
const POSNET_BIN = process.env.POSNET_BIN ?? path.join(here, "..", "..", "target", "debug", "posnet");
const ROUNDS = 10;

const securityKey = {
  Passphrase: "posnet-interop-passphrase",
  KeyIdentifier: "posnetkey",
  KeyVersion: 3,
  AdyenCryptoVersion: 1,
};

function posnet(direction, input) {
  const r = spawnSync(
    POSNET_BIN,
    ["crypto", "nexo", direction, "--key-id", securityKey.KeyIdentifier, "--key-version", String(securityKey.KeyVersion)],
    { input, env: { ...process.env, POSNET_NEXO_PASSPHRASE: securityKey.Passphrase }, encoding: "utf8" },
  );
  return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr };
}

function header(type, category) {
  return {
    ProtocolVersion: "3.0",
    MessageClass: "Service",
    MessageCategory: category,
    MessageType: type,
    SaleID: "POSNET-" + randomBytes(3).toString("hex"),
    ServiceID: randomBytes(5).toString("hex").slice(0, 10),
    POIID: "posnet-terminal-1",
  };
}

function paymentRequest(i) {
  return {
    SaleToPOIRequest: {
      MessageHeader: header("Request", "Payment"),
      PaymentRequest: {
        SaleData: { SaleTransactionID: { TransactionID: String(1000 + i), TimeStamp: new Date(0).toISOString() } },
        PaymentTransaction: { AmountsReq: { Currency: "EUR", RequestedAmount: 1 + i / 100 } },
        // Variable length, non-ASCII text included: exercises padding and UTF-8.
        Note: "é€ " + randomBytes(i * 7).toString("base64"),
      },
    },
  };
}

function paymentResponse(i) {
  return {
    SaleToPOIResponse: {
      MessageHeader: header("Response", "Payment"),
      PaymentResponse: { Response: { Result: "Success" }, POIData: { POITransactionID: { TransactionID: "T" + i } } },
    },
  };
}

function flipBit(b64, byteIndex) {
  const bytes = Buffer.from(b64, "base64");
  bytes[byteIndex] ^= 0x01;
  return bytes.toString("base64");
}

test("Adyen's library secures, posnet opens", () => {
  for (let i = 0; i < ROUNDS; i++) {
    const message = paymentRequest(i);
    const plaintext = JSON.stringify(message);
    const secured = NexoCrypto.encrypt(message.SaleToPOIRequest.MessageHeader, plaintext, securityKey);
    const r = posnet("decrypt", JSON.stringify({ SaleToPOIRequest: secured }));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, plaintext);
  }
});

test("posnet secures, Adyen's library opens", () => {
  for (let i = 0; i < ROUNDS; i++) {
    const message = i % 2 ? paymentResponse(i) : paymentRequest(i);
    const plaintext = JSON.stringify(message);
    const r = posnet("encrypt", plaintext);
    assert.equal(r.status, 0, r.stderr);
    const envelope = JSON.parse(r.stdout);
    const root = Object.keys(message)[0];
    assert.deepEqual(Object.keys(envelope), [root]);
    const body = envelope[root];
    assert.deepEqual(body.MessageHeader, message[root].MessageHeader);
    assert.equal(body.SecurityTrailer.KeyIdentifier, securityKey.KeyIdentifier);
    assert.equal(body.SecurityTrailer.KeyVersion, securityKey.KeyVersion);
    assert.equal(body.SecurityTrailer.AdyenCryptoVersion, 1);
    assert.equal(Buffer.from(body.SecurityTrailer.Nonce, "base64").length, 16);
    assert.equal(new NexoCrypto().decrypt(body, securityKey), plaintext);
  }
});

test("a flipped bit fails the HMAC on both sides", () => {
  // Adyen-secured message, one bit of the first ciphertext block flipped:
  // the padding still checks out, so the HMAC is what catches it.
  const message = paymentRequest(3);
  const secured = NexoCrypto.encrypt(message.SaleToPOIRequest.MessageHeader, JSON.stringify(message), securityKey);
  const tampered = { ...secured, NexoBlob: flipBit(secured.NexoBlob, 5) };
  const r = posnet("decrypt", JSON.stringify({ SaleToPOIRequest: tampered }));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /authentication failed/);
  assert.throws(() => new NexoCrypto().decrypt(tampered, securityKey), { name: "NexoCryptoException", message: "Hmac validation failed" });

  // posnet-secured message with a flipped bit in the HMAC itself.
  const ours = JSON.parse(posnet("encrypt", JSON.stringify(paymentResponse(1))).stdout).SaleToPOIResponse;
  const badHmac = { ...ours, SecurityTrailer: { ...ours.SecurityTrailer, Hmac: flipBit(ours.SecurityTrailer.Hmac, 0) } };
  assert.throws(() => new NexoCrypto().decrypt(badHmac, securityKey), { name: "NexoCryptoException", message: "Hmac validation failed" });
  const back = posnet("decrypt", JSON.stringify({ SaleToPOIResponse: badHmac }));
  assert.equal(back.status, 1);
  assert.match(back.stderr, /authentication failed/);
  assert.doesNotMatch(back.stderr, /posnet-interop-passphrase/);
});
