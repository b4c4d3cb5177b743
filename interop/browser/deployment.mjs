// A real posnet deployment for the browser tests, built with the posnet
// binary at $POSNET_BIN as an operator would (the same steps as
// interop/node/terminal_local_api.test.mjs): CA, host with its accounts,
// enrollment, host and terminal running, a pairing code. And Debian's
// Chromium, driven by Playwright, with a fresh profile.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash, createHmac, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const POSNET_BIN = process.env.POSNET_BIN ?? path.join(here, "..", "..", "target", "debug", "posnet");
const MERCHANT = "M00000000000008";
const TERMINAL = "T0000008";

/// The test cards the host is seeded with (docs/test-cards.md): the
/// approved chip card and the contactless card holding 5.00.
const CARDS = [
  { pan: "6200000000000005", pin: "1234", balance: 100000, holder: "approved" },
  { pan: "6200000000000013", pin: null, balance: 500, holder: "insufficient_funds" },
];

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

/// Polls `check` until it holds; a safety net of 30 s, not a timed assertion.
export async function until(what, check) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (await check()) return;
    assert.ok(Date.now() < deadline, `timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export class Deployment {
  constructor() {
    this.dir = mkdtempSync(path.join(os.tmpdir(), "posnet-browser-"));
    this.daemons = [];
  }

  posnet(args) {
    const r = spawnSync(POSNET_BIN, args, { cwd: this.dir, encoding: "utf8", env: { ...process.env, RUST_LOG: "warn" } });
    assert.equal(r.status, 0, `posnet ${args.join(" ")} failed: ${r.stderr}`);
    return r.stdout;
  }

  /// Starts `posnet <args>`; resolves with its first stdout line as JSON.
  daemon(args, log) {
    const child = spawn(POSNET_BIN, args, { cwd: this.dir, stdio: ["ignore", "pipe", "pipe"] });
    this.daemons.push(child);
    const logged = [];
    child.stderr.on("data", (d) => logged.push(d));
    child.on("exit", () => writeFileSync(path.join(this.dir, log), Buffer.concat(logged)));
    return new Promise((resolve, reject) => {
      const lines = readline.createInterface({ input: child.stdout });
      lines.once("line", (line) => resolve(JSON.parse(line)));
      child.once("exit", (code) => reject(new Error(`posnet ${args.join(" ")} exited with ${code}: ${Buffer.concat(logged)}`)));
    });
  }

  /// CA, host, enrollment, host and terminal running (the terminal's nexo
  /// endpoint on a free loopback port), online.
  async start() {
    const hostAddr = `127.0.0.1:${await freePort()}`;
    this.nexoPort = await freePort();
    writeFileSync(
      path.join(this.dir, "host.toml"),
      `data_dir = "host"\ndeployment_dir = "deployment"\nlisten = "${hostAddr}"\napi_listen = "127.0.0.1:0"\n`,
    );
    let seed = `[[merchant]]\nmerchant_id = "${MERCHANT}"\nname = "Browser Corner Shop"\ncurrency = 156\nmax_amount = 500000\n`;
    for (const c of CARDS) {
      seed +=
        `\n[[card]]\npan = "${c.pan}"\nexpiry = "3012"\n${c.pin ? `pin = "${c.pin}"\n` : ""}balance = ${c.balance}\n` +
        `per_txn_limit = 50000\ndaily_limit = 1000000\ncurrency = 156\nstatus = "active"\nholder = "${c.holder}"\n`;
    }
    writeFileSync(path.join(this.dir, "seed.toml"), seed);
    this.posnet(["ca", "init", "--dir", "deployment"]);
    this.posnet(["host", "--config", "host.toml", "accounts", "import", "seed.toml"]);
    this.posnet(["host", "--config", "host.toml", "enroll", "--terminal-id", TERMINAL, "--merchant-id", MERCHANT, "--host", hostAddr, "--out", "bundle.json"]);
    this.posnet(["ca", "export-transport-key", "--dir", "deployment", "--out", "ktk.hex"]);
    await this.daemon(["host", "--config", "host.toml", "run"], "host.log");
    const started = await this.daemon(
      ["terminal", "run", "--bundle", "bundle.json", "--transport-key-file", "ktk.hex", "--data-dir", "terminal",
        "--screen-listen", "127.0.0.1:0", "--nexo-listen", `127.0.0.1:${this.nexoPort}`, "--card-timeout-secs", "60"],
      "terminal.log",
    );
    this.screenUrl = started.screen;
    this.terminalId = TERMINAL;
    this.origin = `https://127.0.0.1:${this.nexoPort}`;
    await until("the terminal is online", () => this.status().online === true);
  }

  status() {
    const r = spawnSync(POSNET_BIN, ["terminal", "status", "--url", this.screenUrl], { cwd: this.dir, encoding: "utf8" });
    return r.status === 0 ? JSON.parse(r.stdout) : {};
  }

  /// The terminal's journal, newest first.
  transactions() {
    return this.posnet(["terminal", "history", "--limit", "50", "--url", this.screenUrl])
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  }

  /// A pairing code, as the terminal prints it.
  pair(label) {
    const printed = this.posnet(["terminal", "pair", "--label", label, "--url", this.screenUrl]);
    return printed.split("\n").find((l) => l.startsWith("pairing code: ")).slice("pairing code: ".length);
  }

  /// SHA-256 of the certificate the nexo endpoint serves, as 64 hex digits.
  certificateSha256() {
    const der = new X509Certificate(readFileSync(path.join(this.dir, "terminal", "ecr-cert.pem"))).raw;
    return createHash("sha256").update(der).digest("hex");
  }

  /// Presents catalog card `name` to the payment waiting for one; fails
  /// when none waits (the caller waits for "Present card" first).
  present(name) {
    this.posnet(["terminal", "present", "--card", name, "--url", this.screenUrl]);
  }

  /// A fresh supervisor secret; a function giving the code of now.
  supervisor() {
    const uri = this.posnet(["terminal", "supervisor", "set", "--url", this.screenUrl])
      .split("\n")
      .find((l) => l.startsWith("otpauth://"));
    const secret = base32(new URL(uri).searchParams.get("secret"));
    return () => totp(secret, Math.floor(Date.now() / 1000 / 30));
  }

  async stop() {
    await Promise.all(
      this.daemons
        .filter((d) => d.exitCode === null)
        .map((d) => new Promise((resolve) => {
          d.once("exit", resolve);
          d.kill("SIGTERM");
        })),
    );
    if (process.env.POSNET_KEEP_TEST_DIRS) console.log(`kept ${this.dir}`);
    else rmSync(this.dir, { recursive: true, force: true });
  }
}

function base32(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of text.replace(/=+$/, "")) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

/// RFC 6238 TOTP (HMAC-SHA-1, 6 digits) of 30-second step `step`.
function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac("sha1", secret).update(counter).digest();
  const offset = mac[19] & 0x0f;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(value).padStart(6, "0");
}

/// Where screenshots go: $POSNET_TEST_OUTPUT/browser, else a new
/// temporary directory. Kept after the run; its path is printed.
export function outputDir() {
  const base = process.env.POSNET_TEST_OUTPUT;
  const dir = base ? path.join(base, "browser") : mkdtempSync(path.join(os.tmpdir(), "posnet-browser-output-"));
  mkdirSync(dir, { recursive: true });
  return dir;
}

/// A phone-sized screen (the default of `launchChromium`).
export const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };
/// A desktop screen, for the back office.
export const DESKTOP = { viewport: { width: 1280, height: 900 }, isMobile: false, hasTouch: false };

/// Debian's Chromium (/usr/bin/chromium), headless, with a fresh profile,
/// trusting the terminal's self-signed certificate as a cashier does who
/// accepted it once; a phone-sized window unless `screen` says otherwise.
/// `extraArgs` are added to the command line.
export async function launchChromium(extraArgs = [], screen = PHONE) {
  const profile = mkdtempSync(path.join(os.tmpdir(), "posnet-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extraArgs,
    ],
    ignoreHTTPSErrors: true,
    deviceScaleFactor: 1,
    ...screen,
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
