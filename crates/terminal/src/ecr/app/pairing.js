// The pairing code a posnet terminal shows (crates/nexo/src/pairing.rs):
//
//   posnet-pair://host:port?fp=<64 hex>&poi=<POIID>&kid=<key id>&kv=<version>&pass=<passphrase>
//
// read with the same rules as posnet's own reader: every part checked
// before anything is used, unknown or repeated parameters refused.

import { latin1 } from "./nexo.js";

export const SCHEME = "posnet-pair";
/// Longest code accepted: a code is typed or scanned, never large.
export const MAX_CODE_LEN = 1024;

/// A code that cannot be used; the message says why.
export class PairingError extends Error {
  constructor(message) {
    super(message);
    this.name = "PairingError";
  }
}

const PARAMETERS = ["fp", "poi", "kid", "kv", "pass"];

function token(name, value) {
  if (value.length < 1 || value.length > 64) throw new PairingError(`pairing code parameter "${name}": must be 1 to 64 characters`);
  if (!/^[\x21-\x7e]+$/.test(value)) {
    throw new PairingError(`pairing code parameter "${name}": must be printable ASCII without spaces`);
  }
  return value;
}

function address(text) {
  const bad = () => new PairingError(`pairing code address "${text.slice(0, 80)}" is not host:port`);
  let host;
  let port;
  if (text.startsWith("[")) {
    const end = text.indexOf("]:");
    if (end < 0) throw bad();
    host = text.slice(1, end);
    port = text.slice(end + 2);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) throw bad();
    host = text.slice(0, colon);
    port = text.slice(colon + 1);
  }
  if (!host || host.length > 253 || !/^[A-Za-z0-9.:-]+$/.test(host)) throw bad();
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) throw bad();
  return { host, port: Number(port) };
}

/// Reads a code: `{host, port, fingerprint (64 lowercase hex), poiId,
/// keyIdentifier, keyVersion, passphrase}`.
export function parseCode(input) {
  const code = String(input).trim();
  if (code.length > MAX_CODE_LEN) throw new PairingError(`pairing code is ${code.length} characters; at most ${MAX_CODE_LEN} are accepted`);
  const prefix = `${SCHEME}://`;
  if (!code.startsWith(prefix)) throw new PairingError(`not a posnet pairing code (it must start with ${prefix})`);
  const rest = code.slice(prefix.length);
  const q = rest.indexOf("?");
  const where = address(q < 0 ? rest : rest.slice(0, q));
  const found = new Map();
  // URLSearchParams decodes as application/x-www-form-urlencoded, as posnet encodes.
  for (const [name, value] of new URLSearchParams(q < 0 ? "" : rest.slice(q + 1))) {
    if (!PARAMETERS.includes(name) || found.has(name)) {
      throw new PairingError(`pairing code parameter "${name}" is repeated or unknown`);
    }
    found.set(name, value);
  }
  for (const name of PARAMETERS) {
    if (!found.has(name)) throw new PairingError(`pairing code lacks its "${name}" parameter`);
  }
  const fingerprint = found.get("fp");
  if (!/^[0-9a-fA-F]{64}$/.test(fingerprint)) throw new PairingError('pairing code parameter "fp": not 64 hexadecimal digits');
  const kv = found.get("kv");
  if (!/^\d+$/.test(kv) || !Number.isSafeInteger(Number(kv))) throw new PairingError('pairing code parameter "kv": not a whole number');
  const passphrase = found.get("pass");
  if (!passphrase) throw new PairingError('pairing code parameter "pass": empty');
  try {
    latin1(passphrase).fill(0);
  } catch {
    throw new PairingError('pairing code parameter "pass": characters beyond Latin-1');
  }
  return {
    ...where,
    fingerprint: fingerprint.toLowerCase(),
    poiId: token("poi", found.get("poi")),
    keyIdentifier: token("kid", found.get("kid")),
    keyVersion: Number(kv),
    passphrase,
  };
}

/// A SHA-256 fingerprint as browsers show it: `AB:CD:...`.
export function fingerprintText(hex) {
  return hex.toUpperCase().match(/../g).join(":");
}

/// Whether a code's address is the origin at `location` (host and port):
/// the app talks only to the terminal that served it.
export function sameTerminal(pairing, location) {
  const host = location.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  const port = Number(location.port || (location.protocol === "https:" ? 443 : 80));
  return pairing.host.toLowerCase() === host && pairing.port === port;
}

/// The address of a code, as a URL's host part.
export function hostPort(pairing) {
  return pairing.host.includes(":") ? `[${pairing.host}]:${pairing.port}` : `${pairing.host}:${pairing.port}`;
}
