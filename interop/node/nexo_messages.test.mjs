// posnet's nexo Sale-to-POI messages against Adyen's Node library
// (@adyen/api-library, its Terminal API models and ObjectSerializer):
// - every example message of posnet (crates/nexo/tests/fixtures, the ones
//   in docs/ecr-api.md) survives the library's deserialize + serialize
//   unchanged, so each field posnet writes is one the library knows, where
//   the library expects it;
// - requests built with the library's models and enumerations read in
//   posnet and write back identical;
// - posnet's enumerations hold exactly the library's wire strings, and its
//   body members are the library's;
// - secured requests (NexoCrypto) open in posnet; posnet's answers, secured
//   or not, read in the library.
// posnet's side is the nexo_check example (crates/nexo/examples), built
// with cargo unless NEXO_CHECK_BIN names it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const models = require("@adyen/api-library/lib/src/typings/terminal/models");
const NexoCrypto = require("@adyen/api-library/lib/src/security/nexoCrypto").default;
const { ObjectSerializer } = models;

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, "..", "..");
const fixtures = path.join(root, "crates", "nexo", "tests", "fixtures");
const terminalModels = path.join(here, "node_modules", "@adyen", "api-library", "lib", "src", "typings", "terminal");

const securityKey = {
  Passphrase: "posnet-interop-passphrase",
  KeyIdentifier: "posnetkey",
  KeyVersion: 2,
  AdyenCryptoVersion: 1,
};
const keyArgs = ["--key-id", securityKey.KeyIdentifier, "--key-version", String(securityKey.KeyVersion)];

function nexoCheckBinary() {
  if (process.env.NEXO_CHECK_BIN) return process.env.NEXO_CHECK_BIN;
  const r = spawnSync("cargo", ["build", "-q", "-p", "nexo", "--example", "nexo_check", "--message-format=json"], {
    cwd: root,
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  assert.equal(r.status, 0, r.stderr);
  for (const line of r.stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    const message = JSON.parse(line);
    if (message.reason === "compiler-artifact" && message.target?.name === "nexo_check" && message.executable) {
      return message.executable;
    }
  }
  throw new Error("cargo built no nexo_check executable");
}
const NEXO_CHECK = nexoCheckBinary();

function posnet(command, input, { secured = false } = {}) {
  const r = spawnSync(NEXO_CHECK, [command, ...(secured ? keyArgs : [])], {
    input,
    env: { ...process.env, NEXO_PASSPHRASE: securityKey.Passphrase },
    encoding: "utf8",
  });
  return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr };
}

function posnetReads(command, message, options) {
  const r = posnet(command, JSON.stringify(message), options);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

function rootType(message) {
  return "SaleToPOIRequest" in message ? "TerminalApiRequest" : "TerminalApiResponse";
}

// The library's view of a message: deserialized into its models and
// serialized back; fields it does not know are gone.
function throughAdyen(message) {
  const type = rootType(message);
  const typed = ObjectSerializer.deserialize(message, type);
  return JSON.parse(JSON.stringify(ObjectSerializer.serialize(typed, type)));
}

// A message as the library's TerminalLocalAPI sends it.
function adyenJson(message) {
  return JSON.parse(JSON.stringify(ObjectSerializer.serialize(message, rootType(message))));
}

function fixtureFiles(dir, suffix = ".json") {
  return readdirSync(path.join(fixtures, dir))
    .filter((f) => f.endsWith(suffix))
    .sort()
    .map((f) => [`${dir}/${f}`, JSON.parse(readFileSync(path.join(fixtures, dir, f), "utf8"))]);
}

test("every posnet example message is Adyen's JSON", () => {
  const all = [
    ...fixtureFiles("requests"),
    ...fixtureFiles("responses"),
    ...fixtureFiles("replies", ".reply.json"),
  ];
  assert.ok(all.length >= 25, `only ${all.length} fixtures`);
  for (const [name, message] of all) {
    assert.deepEqual(throughAdyen(message), message, name);
  }
});

const { MessageClassType, MessageCategoryType, MessageType, ReversalReasonType, DocumentQualifierType } = models;
let serviceCounter = 0;

function header(category, { messageClass = MessageClassType.Service } = {}) {
  serviceCounter += 1;
  return {
    ProtocolVersion: "3.0",
    MessageClass: messageClass,
    MessageCategory: category,
    MessageType: MessageType.Request,
    ServiceID: String(4000000000 + serviceCounter),
    SaleID: "node-ecr",
    POIID: "posnet-terminal-1",
  };
}

function saleData(id) {
  return { SaleTransactionID: { TransactionID: String(id), TimeStamp: "2025-03-14T09:26:53.000Z" }, OperatorID: "op-1" };
}

function payment(amount, currency, paymentType) {
  return {
    SaleToPOIRequest: {
      MessageHeader: header(MessageCategoryType.Payment),
      PaymentRequest: {
        SaleData: saleData(1000 + serviceCounter),
        PaymentTransaction: { AmountsReq: { Currency: currency, RequestedAmount: amount } },
        PaymentData: { PaymentType: paymentType },
      },
    },
  };
}

const poiTransaction = { TransactionID: "000123", TimeStamp: "2025-03-14T09:26:58.000Z" };
const reference = { MessageCategory: MessageCategoryType.Payment, ServiceID: "4000000001", SaleID: "node-ecr" };

function adyenRequests() {
  const { Normal, Refund } = models.PaymentData.PaymentTypeEnum;
  return {
    payment: payment(12.5, "EUR", Normal),
    "payment 0.01": payment(0.01, "EUR", Normal),
    "payment 999999.99": payment(999999.99, "EUR", Normal),
    "refund in yen": payment(1250, "JPY", Refund),
    reversal: {
      SaleToPOIRequest: {
        MessageHeader: header(MessageCategoryType.Reversal),
        ReversalRequest: {
          OriginalPOITransaction: { POITransactionID: poiTransaction, SaleID: "node-ecr", POIID: "posnet-terminal-1" },
          ReversalReason: ReversalReasonType.MerchantCancel,
          ReversedAmount: 12.5,
        },
      },
    },
    "transaction status": {
      SaleToPOIRequest: {
        MessageHeader: header(MessageCategoryType.TransactionStatus),
        TransactionStatusRequest: {
          MessageReference: reference,
          ReceiptReprintFlag: true,
          DocumentQualifier: [DocumentQualifierType.CashierReceipt, DocumentQualifierType.CustomerReceipt],
        },
      },
    },
    abort: {
      SaleToPOIRequest: {
        MessageHeader: header(MessageCategoryType.Abort),
        AbortRequest: { AbortReason: "MerchantAbort", MessageReference: reference },
      },
    },
    login: {
      SaleToPOIRequest: {
        MessageHeader: header(MessageCategoryType.Login),
        LoginRequest: {
          DateTime: "2025-03-14T08:00:00+01:00",
          SaleSoftware: {
            ManufacturerID: "Node ECR",
            ApplicationName: "interop",
            SoftwareVersion: "1.0",
            CertificationCode: "none",
          },
          SaleTerminalData: {
            TerminalEnvironment: models.TerminalEnvironmentType.Attended,
            SaleCapabilities: [models.SaleCapabilitiesType.CashierDisplay, models.SaleCapabilitiesType.PrinterReceipt],
            TotalsGroupID: "group-1",
          },
          OperatorLanguage: "en",
          OperatorID: "op-1",
          ShiftNumber: "1",
          TrainingModeFlag: false,
          POISerialNumber: "PN-000001",
        },
      },
    },
    logout: {
      SaleToPOIRequest: {
        MessageHeader: header(MessageCategoryType.Logout),
        LogoutRequest: { MaintenanceAllowed: false },
      },
    },
    diagnosis: {
      SaleToPOIRequest: {
        MessageHeader: header(MessageCategoryType.Diagnosis),
        DiagnosisRequest: { POIID: "posnet-terminal-1", HostDiagnosisFlag: true, AcquirerID: ["posnet-host"] },
      },
    },
  };
}

test("requests built with Adyen's models read in posnet and write back identical", () => {
  for (const [name, request] of Object.entries(adyenRequests())) {
    const sent = adyenJson(request);
    assert.deepEqual(posnetReads("request", sent), sent, name);
    // A request posnet serves is answered by nothing from `answer`.
    const r = posnet("answer", JSON.stringify(sent));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "", name);
  }
});

test("fields posnet does not model are tolerated", () => {
  const request = payment(12.5, "EUR", models.PaymentData.PaymentTypeEnum.Normal);
  const body = request.SaleToPOIRequest.PaymentRequest;
  body.SaleData.SaleToAcquirerData = { applicationInfo: { merchantApplication: { name: "node-ecr" } } };
  body.SaleData.TokenRequestedType = models.SaleData.TokenRequestedTypeEnum.Customer;
  body.PaymentTransaction.SaleItem = [{ ItemID: 1, ProductCode: "SKU-1", ItemAmount: 12.5, Quantity: 1 }];
  body.PaymentTransaction.TransactionConditions = { ForceOnlineFlag: true };
  const sent = adyenJson(request);
  // The library base64-encodes the SaleToAcquirerData object.
  assert.equal(typeof sent.SaleToPOIRequest.PaymentRequest.SaleData.SaleToAcquirerData, "string");
  const read = posnetReads("request", sent);
  assert.deepEqual(read.SaleToPOIRequest.PaymentRequest.SaleData.SaleToAcquirerData, sent.SaleToPOIRequest.PaymentRequest.SaleData.SaleToAcquirerData);
  assert.equal(read.SaleToPOIRequest.PaymentRequest.PaymentTransaction.AmountsReq.RequestedAmount, 12.5);
  assert.equal(read.SaleToPOIRequest.PaymentRequest.PaymentTransaction.SaleItem, undefined);
});

// The wire strings of an enumeration, from the library's compiled source:
// `E[E["Icc"] = 'ICC'] = "Icc"` travels as ICC.
function libraryEnum(typeName) {
  const file = typeName[0].toLowerCase() + typeName.slice(1) + ".js";
  const source = readFileSync(path.join(terminalModels, file), "utf8");
  return [...source.matchAll(/\["\w+"\] = '([^']+)'/g)].map((m) => m[1]).sort();
}

test("posnet's enumerations are the library's, value for value", () => {
  const model = JSON.parse(posnet("model", "").stdout);
  const names = Object.keys(model.enumerations);
  assert.ok(names.length >= 20);
  for (const name of names) {
    assert.deepEqual([...model.enumerations[name]].sort(), libraryEnum(name), name);
  }
  // Spot checks of the spellings that differ from the TypeScript names.
  assert.ok(model.enumerations.ErrorConditionType.includes("WrongPIN"));
  assert.ok(model.enumerations.MessageCategoryType.includes("CardReaderAPDU"));
  assert.ok(model.enumerations.EntryModeType.includes("ICC"));
});

test("posnet's body members are the library's", () => {
  const model = JSON.parse(posnet("model", "").stdout);
  const requestMembers = models.SaleToPOIRequest.getAttributeTypeMap().map((a) => a.baseName);
  const responseMembers = models.SaleToPOIResponse.getAttributeTypeMap().map((a) => a.baseName);
  const ours = { request: [], response: [] };
  for (const [category, request, response] of model.members) {
    assert.ok(requestMembers.includes(request), `${category}: ${request}`);
    ours.request.push(request);
    if (response !== null) {
      assert.ok(responseMembers.includes(response), `${category}: ${response}`);
      // posnet answers these with a bare Response: the library's body has one.
      const body = models[response].getAttributeTypeMap().map((a) => a.baseName);
      assert.ok(body.includes("Response"), response);
      ours.response.push(response);
    }
  }
  const notBodies = ["MessageHeader", "SecurityTrailer"];
  assert.deepEqual(ours.request.sort(), requestMembers.filter((m) => !notBodies.includes(m)).sort());
  // The library's responses posnet has no bare answer for are exactly
  // those without a top-level Response.
  const withoutBare = responseMembers.filter((m) => !notBodies.includes(m) && !ours.response.includes(m));
  assert.deepEqual(withoutBare.sort(), ["DisplayResponse", "InputResponse"]);
});

test("secured requests from the library open in posnet; secured answers open in the library", () => {
  for (const [name, request] of Object.entries(adyenRequests())) {
    const sent = adyenJson(request);
    const secured = NexoCrypto.encrypt(sent.SaleToPOIRequest.MessageHeader, JSON.stringify(sent), securityKey);
    assert.deepEqual(posnetReads("request", { SaleToPOIRequest: secured }, { secured: true }), sent, name);
  }
  // A payment type posnet does not serve: refused NotAllowed, the answer
  // secured with the same key.
  const cash = adyenJson(payment(20, "EUR", models.PaymentData.PaymentTypeEnum.CashAdvance));
  const secured = NexoCrypto.encrypt(cash.SaleToPOIRequest.MessageHeader, JSON.stringify(cash), securityKey);
  const r = posnet("answer", JSON.stringify({ SaleToPOIRequest: secured }), { secured: true });
  assert.equal(r.status, 0, r.stderr);
  const envelope = ObjectSerializer.deserialize(JSON.parse(r.stdout), "TerminalApiSecuredResponse");
  const answer = ObjectSerializer.deserialize(
    JSON.parse(new NexoCrypto().decrypt(envelope.SaleToPOIResponse, securityKey)),
    "TerminalApiResponse",
  );
  assert.equal(answer.SaleToPOIResponse.MessageHeader.ServiceID, cash.SaleToPOIRequest.MessageHeader.ServiceID);
  assert.equal(answer.SaleToPOIResponse.MessageHeader.MessageType, "Response");
  assert.equal(answer.SaleToPOIResponse.PaymentResponse.Response.Result, "Failure");
  assert.equal(answer.SaleToPOIResponse.PaymentResponse.Response.ErrorCondition, "NotAllowed");
});

test("a message under another key is rejected, not acted on", () => {
  const sent = adyenJson(payment(12.5, "EUR", models.PaymentData.PaymentTypeEnum.Normal));
  const otherKey = { ...securityKey, KeyIdentifier: "otherkey" };
  const secured = NexoCrypto.encrypt(sent.SaleToPOIRequest.MessageHeader, JSON.stringify(sent), otherKey);
  const body = JSON.stringify({ SaleToPOIRequest: secured });
  const read = posnet("request", body, { secured: true });
  assert.equal(read.status, 1);
  assert.match(read.stderr, /message security/);
  const r = posnet("answer", body, { secured: true });
  const reject = ObjectSerializer.deserialize(JSON.parse(r.stdout), "TerminalApiRequest").SaleToPOIRequest;
  assert.equal(reject.MessageHeader.MessageCategory, "Event");
  assert.equal(reject.MessageHeader.SaleID, "node-ecr");
  assert.equal(reject.EventNotification.EventToNotify, "Reject");
  assert.match(decodeURIComponent(reject.EventNotification.EventDetails.replace(/\+/g, " ")), /expected key "posnetkey" version 2/);
  assert.equal(Buffer.from(reject.EventNotification.RejectedMessage, "base64").toString(), body);
});

test("requests posnet does not serve, and malformed ones, get nexo answers the library reads", () => {
  const acquisition = adyenJson({
    SaleToPOIRequest: {
      MessageHeader: header(MessageCategoryType.CardAcquisition),
      CardAcquisitionRequest: { SaleData: saleData(7), CardAcquisitionTransaction: { TotalAmount: 12.5 } },
    },
  });
  const notAllowed = ObjectSerializer.deserialize(JSON.parse(posnet("answer", JSON.stringify(acquisition)).stdout), "TerminalApiResponse");
  assert.equal(notAllowed.SaleToPOIResponse.CardAcquisitionResponse.Response.ErrorCondition, "NotAllowed");

  const malformed = adyenJson(payment(12.5, "EUR", models.PaymentData.PaymentTypeEnum.Normal));
  malformed.SaleToPOIRequest.PaymentRequest.PaymentTransaction.AmountsReq.RequestedAmount = "12.5";
  const format = ObjectSerializer.deserialize(JSON.parse(posnet("answer", JSON.stringify(malformed)).stdout), "TerminalApiResponse");
  assert.equal(format.SaleToPOIResponse.MessageHeader.ServiceID, malformed.SaleToPOIRequest.MessageHeader.ServiceID);
  assert.equal(format.SaleToPOIResponse.PaymentResponse.Response.ErrorCondition, "MessageFormat");

  const decimals = adyenJson(payment(12.505, "EUR", models.PaymentData.PaymentTypeEnum.Normal));
  const refused = ObjectSerializer.deserialize(JSON.parse(posnet("answer", JSON.stringify(decimals)).stdout), "TerminalApiResponse");
  assert.equal(refused.SaleToPOIResponse.PaymentResponse.Response.ErrorCondition, "MessageFormat");
  assert.match(refused.SaleToPOIResponse.PaymentResponse.Response.AdditionalResponse, /more\+decimals\+than\+EUR/);

  const truncated = JSON.stringify(adyenJson(payment(1, "EUR", models.PaymentData.PaymentTypeEnum.Normal))).slice(0, 30);
  const unreadable = ObjectSerializer.deserialize(JSON.parse(posnet("answer", truncated).stdout), "TerminalApiRequest");
  assert.equal(unreadable.SaleToPOIRequest.EventNotification.EventToNotify, "Reject");
  assert.match(unreadable.SaleToPOIRequest.EventNotification.EventDetails, /byte\+30/);
});
