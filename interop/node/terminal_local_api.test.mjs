// Adyen's own Node library (@adyen/api-library, TerminalLocalAPI with a
// security key) drives a real posnet terminal over HTTPS: Payment,
// TransactionStatus and Abort get valid answers, and a wrong passphrase
// gets an error. The deployment is built with the posnet binary at
// $POSNET_BIN as an operator would: CA, host, enrollment, terminal, pairing.
//
// TerminalLocalAPI always posts to `<endpoint>:8443/nexo/`, so the
// terminal listens on 127.0.0.1:8443. The library accepts a CA file only
// for certificates named `<model>-<serial>.test.terminal.adyen.com`, a name
// a posnet terminal must not claim, so it runs with `certificatePath:
// "unencrypted"` (TLS without certificate checks; posnet's own phone pins
// the certificate's fingerprint instead, and this test checks that the
// pairing code names the certificate served). Message security (the
// passphrase's keys, HMAC) still authenticates every message both ways.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { createHash, randomBytes, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const { Client, Config, TerminalLocalAPI } = require("@adyen/api-library");

const here = path.dirname(fileURLToPath(import.meta.url));
const POSNET_BIN = process.env.POSNET_BIN ?? path.join(here, "..", "..", "target", "debug", "posnet");
const MERCHANT = "M00000000000007";
const SALE_ID = "NODE-ECR";

let dir;
const daemons = [];
let screenUrl;
let pairing;
let api;

function posnet(args) {
  const r = spawnSync(POSNET_BIN, args, { cwd: dir, encoding: "utf8", env: { ...process.env, RUST_LOG: "warn" } });
  assert.equal(r.status, 0, `posnet ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/// Starts `posnet <args>` and resolves with its first stdout line as JSON.
function daemon(args, log) {
  const child = spawn(POSNET_BIN, args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  daemons.push(child);
  const logged = [];
  child.stderr.on("data", (d) => logged.push(d));
  child.on("exit", () => writeFileSync(path.join(dir, log), Buffer.concat(logged)));
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    lines.once("line", (line) => resolve(JSON.parse(line)));
    child.once("exit", (code) => reject(new Error(`posnet ${args.join(" ")} exited with ${code}: ${Buffer.concat(logged)}`)));
  });
}

async function until(what, check) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (await check()) return;
    assert.ok(Date.now() < deadline, `timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function header(category) {
  return {
    ProtocolVersion: "3.0",
    MessageClass: "Service",
    MessageCategory: category,
    MessageType: "Request",
    SaleID: SALE_ID,
    ServiceID: randomBytes(5).toString("hex"),
    POIID: pairing.poi,
  };
}

function payment(amount) {
  return {
    SaleToPOIRequest: {
      MessageHeader: header("Payment"),
      PaymentRequest: {
        SaleData: { SaleTransactionID: { TransactionID: "order-" + randomBytes(3).toString("hex"), TimeStamp: new Date() } },
        PaymentTransaction: { AmountsReq: { Currency: "CNY", RequestedAmount: amount } },
      },
    },
  };
}

function key(passphrase = pairing.pass) {
  return { Passphrase: passphrase, KeyIdentifier: pairing.kid, KeyVersion: pairing.kv, AdyenCryptoVersion: 1 };
}

/// Presents the approved test card to the payment that waits for one.
async function presentCard() {
  await until("a payment waits for the card", () => {
    const r = spawnSync(POSNET_BIN, ["terminal", "present", "--card", "approved", "--url", screenUrl], { cwd: dir, encoding: "utf8" });
    return r.status === 0;
  });
}

before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "posnet-node-ecr-"));
  const hostAddr = `127.0.0.1:${await freePort()}`;
  writeFileSync(
    path.join(dir, "host.toml"),
    `data_dir = "host"\ndeployment_dir = "deployment"\nlisten = "${hostAddr}"\napi_listen = "127.0.0.1:0"\n`,
  );
  writeFileSync(
    path.join(dir, "seed.toml"),
    `[[merchant]]\nmerchant_id = "${MERCHANT}"\nname = "Node Corner Shop"\ncurrency = 156\nmax_amount = 500000\n\n` +
      `[[card]]\npan = "6200000000000005"\nexpiry = "3012"\npin = "1234"\nbalance = 100000\nper_txn_limit = 50000\n` +
      `daily_limit = 1000000\ncurrency = 156\nstatus = "active"\nholder = "approved"\n`,
  );
  posnet(["ca", "init", "--dir", "deployment"]);
  posnet(["host", "--config", "host.toml", "accounts", "import", "seed.toml"]);
  posnet(["host", "--config", "host.toml", "enroll", "--terminal-id", "T0000007", "--merchant-id", MERCHANT, "--host", hostAddr, "--out", "bundle.json"]);
  posnet(["ca", "export-transport-key", "--dir", "deployment", "--out", "ktk.hex"]);
  await daemon(["host", "--config", "host.toml", "run"], "host.log");
  const started = await daemon(
    ["terminal", "run", "--bundle", "bundle.json", "--transport-key-file", "ktk.hex", "--data-dir", "terminal",
      "--screen-listen", "127.0.0.1:0", "--nexo-listen", "127.0.0.1:8443", "--card-timeout-secs", "30"],
    "terminal.log",
  );
  screenUrl = started.screen;
  await until("the terminal is online", () => {
    const r = spawnSync(POSNET_BIN, ["terminal", "status", "--url", screenUrl], { cwd: dir, encoding: "utf8" });
    return r.status === 0 && JSON.parse(r.stdout).online === true;
  });
  const printed = posnet(["terminal", "pair", "--label", "adyen-node", "--url", screenUrl]);
  const code = printed.split("\n").find((l) => l.startsWith("pairing code: ")).slice("pairing code: ".length);
  const url = new URL(code);
  pairing = Object.fromEntries(url.searchParams);
  pairing.kv = Number(pairing.kv);

  // The certificate the library will trust is the one the code pins.
  const certPath = path.join(dir, "terminal", "ecr-cert.pem");
  const der = new X509Certificate(readFileSync(certPath)).raw;
  assert.equal(createHash("sha256").update(der).digest("hex"), pairing.fp);

  const config = new Config({ environment: "TEST", apiKey: "not-checked-by-a-local-terminal", certificatePath: "unencrypted", terminalApiLocalEndpoint: "https://127.0.0.1" });
  api = new TerminalLocalAPI(new Client(config));
});

after(async () => {
  await Promise.all(
    daemons.filter((d) => d.exitCode === null).map((d) => new Promise((resolve) => {
      d.once("exit", resolve);
      d.kill("SIGTERM");
    })),
  );
  if (process.env.POSNET_KEEP_TEST_DIRS) console.log(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
});

test("Payment is approved and TransactionStatus repeats its answer", async () => {
  const request = payment(12.5);
  const [answer] = await Promise.all([api.request(request, key()), presentCard()]);
  const response = answer.SaleToPOIResponse;
  assert.equal(response.MessageHeader.ServiceID, request.SaleToPOIRequest.MessageHeader.ServiceID);
  const pay = response.PaymentResponse;
  assert.equal(pay.Response.Result, "Success", pay.Response.AdditionalResponse);
  assert.equal(pay.PaymentResult.AmountsResp.AuthorizedAmount, 12.5);
  assert.equal(pay.PaymentResult.AmountsResp.Currency, "CNY");
  assert.match(pay.PaymentResult.PaymentInstrumentData.CardData.MaskedPan, /^620000\D+0005$/);
  assert.match(pay.POIData.POITransactionID.TransactionID, /^\d{6}\.\d{6}$/);

  const status = {
    SaleToPOIRequest: {
      MessageHeader: header("TransactionStatus"),
      TransactionStatusRequest: {
        MessageReference: { MessageCategory: "Payment", SaleID: SALE_ID, ServiceID: request.SaleToPOIRequest.MessageHeader.ServiceID },
      },
    },
  };
  const repeated = (await api.request(status, key())).SaleToPOIResponse.TransactionStatusResponse;
  assert.equal(repeated.Response.Result, "Success");
  const original = repeated.RepeatedMessageResponse.RepeatedResponseMessageBody.PaymentResponse;
  assert.equal(original.POIData.POITransactionID.TransactionID, pay.POIData.POITransactionID.TransactionID);
  assert.equal(original.PaymentResult.PaymentAcquirerData.ApprovalCode, pay.PaymentResult.PaymentAcquirerData.ApprovalCode);
});

test("TransactionStatus of an unknown ServiceID is NotFound", async () => {
  const status = {
    SaleToPOIRequest: {
      MessageHeader: header("TransactionStatus"),
      TransactionStatusRequest: { MessageReference: { MessageCategory: "Payment", SaleID: SALE_ID, ServiceID: "0000000000" } },
    },
  };
  const answer = (await api.request(status, key())).SaleToPOIResponse.TransactionStatusResponse;
  assert.equal(answer.Response.Result, "Failure");
  assert.equal(answer.Response.ErrorCondition, "NotFound");
});

test("Abort ends a payment that waits for the card", async () => {
  const request = payment(3);
  const pending = api.request(request, key());
  // The payment is waiting once TransactionStatus calls it InProgress.
  await until("the payment is in progress", async () => {
    const status = {
      SaleToPOIRequest: {
        MessageHeader: header("TransactionStatus"),
        TransactionStatusRequest: {
          MessageReference: { MessageCategory: "Payment", SaleID: SALE_ID, ServiceID: request.SaleToPOIRequest.MessageHeader.ServiceID },
        },
      },
    };
    const r = (await api.request(status, key())).SaleToPOIResponse.TransactionStatusResponse;
    return r.Response.ErrorCondition === "InProgress";
  });
  const abort = {
    SaleToPOIRequest: {
      MessageHeader: header("Abort"),
      AbortRequest: {
        AbortReason: "MerchantAbort",
        MessageReference: { MessageCategory: "Payment", SaleID: SALE_ID, ServiceID: request.SaleToPOIRequest.MessageHeader.ServiceID },
      },
    },
  };
  // An abort has no answer of its own: the library returns an empty response.
  const aborted = await api.request(abort, key());
  assert.equal(aborted.SaleToPOIResponse, undefined);
  const pay = (await pending).SaleToPOIResponse.PaymentResponse;
  assert.equal(pay.Response.Result, "Failure");
  assert.equal(pay.Response.ErrorCondition, "Aborted");
});

test("a wrong passphrase is an error, and nothing is paid", async () => {
  const request = payment(4);
  await assert.rejects(api.request(request, key("not-the-passphrase")));
  const status = {
    SaleToPOIRequest: {
      MessageHeader: header("TransactionStatus"),
      TransactionStatusRequest: {
        MessageReference: { MessageCategory: "Payment", SaleID: SALE_ID, ServiceID: request.SaleToPOIRequest.MessageHeader.ServiceID },
      },
    },
  };
  const answer = (await api.request(status, key())).SaleToPOIResponse.TransactionStatusResponse;
  assert.equal(answer.Response.ErrorCondition, "NotFound");
});
