// nexo message security as Adyen's Terminal API defines it (crypto
// version 1), in WebCrypto, for the cashier's phone app (docs/ecr-api.md,
// "Message security"):
//
// - key material: PBKDF2-HMAC-SHA1 of the passphrase as Latin-1 bytes, salt
//   "AdyenNexoV1Salt", 4000 iterations, 80 bytes: HMAC key (32), AES key
//   (32), IV (16);
// - per message a random 16-byte nonce; the CBC IV is the derived IV XOR
//   the nonce;
// - NexoBlob: base64 of AES-256-CBC (PKCS#7) of the plaintext JSON;
// - Hmac: base64 of HMAC-SHA256 of the plaintext JSON.
//
// A standard ES module on globalThis.crypto.subtle: the browser runs it,
// and so does Node (its tests check it against posnet's implementation).
// The derived keys are non-extractable CryptoKeys: once derived, no script
// of the page can read them back, only use them.

const SALT = "AdyenNexoV1Salt";
const ITERATIONS = 4000;
const CRYPTO_VERSION = 1;
const NONCE_LEN = 16;
/// Largest envelope or plaintext handled, as posnet's own limit: nexo
/// messages are a few kilobytes, and nothing larger is parsed.
export const MAX_MESSAGE_LEN = 1 << 20;

const subtle = () => globalThis.crypto.subtle;

/// A message could not be secured or opened; `reason` names what failed
/// (never a key or a passphrase).
export class NexoError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = "NexoError";
    this.reason = reason;
  }
}

/// The passphrase as Latin-1 bytes, as Adyen's libraries read it.
export function latin1(text) {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new NexoError("passphrase", "the passphrase must be Latin-1 text");
    bytes[i] = c;
  }
  return bytes;
}

export function toBase64(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function fromBase64(text, field) {
  if (typeof text !== "string") throw new NexoError("shape", `${field} is missing or not a string`);
  let binary;
  try {
    binary = atob(text);
  } catch {
    throw new NexoError("base64", `${field} is not base64`);
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/// The key of a pairing: `{keyIdentifier, keyVersion, hmacKey, aesKey,
/// iv}`, the two keys non-extractable CryptoKeys (they can be kept in
/// IndexedDB as they are), `iv` the derived 16 bytes.
export async function deriveKey(passphrase, keyIdentifier, keyVersion) {
  if (!passphrase) throw new NexoError("passphrase", "the passphrase is empty");
  if (!Number.isSafeInteger(keyVersion) || keyVersion < 0) {
    throw new NexoError("key", "the key version must be a whole number");
  }
  const secret = latin1(passphrase);
  const base = await subtle().importKey("raw", secret, "PBKDF2", false, ["deriveBits"]);
  secret.fill(0);
  const bits = new Uint8Array(
    await subtle().deriveBits(
      { name: "PBKDF2", hash: "SHA-1", salt: new TextEncoder().encode(SALT), iterations: ITERATIONS },
      base,
      80 * 8,
    ),
  );
  try {
    const hmacKey = await subtle().importKey("raw", bits.slice(0, 32), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
    const aesKey = await subtle().importKey("raw", bits.slice(32, 64), "AES-CBC", false, ["encrypt", "decrypt"]);
    return { keyIdentifier, keyVersion, hmacKey, aesKey, iv: bits.slice(64, 80) };
  } finally {
    bits.fill(0);
  }
}

function ivFor(key, nonce) {
  const iv = new Uint8Array(16);
  for (let i = 0; i < 16; i++) iv[i] = key.iv[i] ^ nonce[i];
  return iv;
}

/// The message's root (`SaleToPOIRequest` or `SaleToPOIResponse`) and body.
function root(value) {
  const names = value && typeof value === "object" && !Array.isArray(value) ? Object.keys(value) : [];
  if (names.length !== 1 || (names[0] !== "SaleToPOIRequest" && names[0] !== "SaleToPOIResponse")) {
    throw new NexoError("shape", "a nexo message has one root, SaleToPOIRequest or SaleToPOIResponse");
  }
  const body = value[names[0]];
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    throw new NexoError("shape", `${names[0]} is not an object`);
  }
  return [names[0], body];
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new NexoError("shape", `${what} is not JSON: ${e.message}`);
  }
}

/// Secures plaintext message JSON (`{"SaleToPOIRequest": {...}}`) with a
/// random nonce; the envelope's JSON text. `nonce` is for tests only: a
/// nonce is never reused with a key.
export async function secure(key, plaintext, nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_LEN))) {
  const bytes = new TextEncoder().encode(plaintext);
  if (bytes.length > MAX_MESSAGE_LEN) throw new NexoError("size", `message of ${bytes.length} bytes is too large`);
  const [name, body] = root(parseJson(plaintext, "the plaintext"));
  if (!body.MessageHeader) throw new NexoError("shape", `${name} has no MessageHeader`);
  const blob = new Uint8Array(await subtle().encrypt({ name: "AES-CBC", iv: ivFor(key, nonce) }, key.aesKey, bytes));
  const hmac = new Uint8Array(await subtle().sign("HMAC", key.hmacKey, bytes));
  return JSON.stringify({
    [name]: {
      MessageHeader: body.MessageHeader,
      NexoBlob: toBase64(blob),
      SecurityTrailer: {
        AdyenCryptoVersion: CRYPTO_VERSION,
        KeyIdentifier: key.keyIdentifier,
        KeyVersion: key.keyVersion,
        Nonce: toBase64(nonce),
        Hmac: toBase64(hmac),
      },
    },
  });
}

/// Whether parsed message `value` is a secured envelope (has a
/// SecurityTrailer) rather than a plain message.
export function isSecured(value) {
  try {
    return Boolean(root(value)[1].SecurityTrailer);
  } catch {
    return false;
  }
}

/// Opens a secured envelope (its JSON text): checks the key identifier,
/// key version and crypto version, decrypts, and verifies the HMAC
/// (WebCrypto's verify compares in constant time). The plaintext JSON text.
export async function open(key, envelope) {
  if (envelope.length > MAX_MESSAGE_LEN) throw new NexoError("size", `envelope of ${envelope.length} characters is too large`);
  const [name, body] = root(parseJson(envelope, "the envelope"));
  const trailer = body.SecurityTrailer;
  if (!trailer || typeof trailer !== "object") throw new NexoError("shape", `${name} has no SecurityTrailer object`);
  if (
    trailer.KeyIdentifier !== key.keyIdentifier ||
    trailer.KeyVersion !== key.keyVersion ||
    trailer.AdyenCryptoVersion !== CRYPTO_VERSION
  ) {
    throw new NexoError(
      "key",
      `secured with key ${JSON.stringify(trailer.KeyIdentifier)} version ${trailer.KeyVersion}, ` +
        `not this pairing's ${JSON.stringify(key.keyIdentifier)} version ${key.keyVersion}`,
    );
  }
  const nonce = fromBase64(trailer.Nonce, "Nonce");
  if (nonce.length !== NONCE_LEN) throw new NexoError("nonce", `the nonce has ${nonce.length} bytes, not ${NONCE_LEN}`);
  const hmac = fromBase64(trailer.Hmac, "Hmac");
  const blob = fromBase64(body.NexoBlob, "NexoBlob");
  let plaintext;
  try {
    plaintext = new Uint8Array(await subtle().decrypt({ name: "AES-CBC", iv: ivFor(key, nonce) }, key.aesKey, blob));
  } catch {
    // Bad padding: the same failure as a wrong HMAC, told apart from nothing.
    throw new NexoError("authentication", "message authentication failed");
  }
  const authentic = await subtle().verify("HMAC", key.hmacKey, hmac, plaintext);
  if (!authentic) {
    plaintext.fill(0);
    throw new NexoError("authentication", "message authentication failed");
  }
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(plaintext);
  } catch {
    throw new NexoError("plaintext", "the plaintext is not UTF-8");
  }
  parseJson(text, "the plaintext");
  return text;
}
