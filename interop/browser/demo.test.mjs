// `posnet demo` as someone trying posnet meets it, in Debian's headless
// Chromium: the demo runs as it would in a terminal window, and everything
// the test does starts from what it printed. The phone web app pairs with
// the retail counter by the printed code and pays (the counter presents the
// approved card by itself); the printed `posnet phone pay` line pays; the
// owner logs in to the back office with password and one-time code, and
// the dashboard and the transactions list show the payments; a restaurant
// table's order of two dishes is split equally and each part paid on the
// restaurant terminal from the back office, which frees the table; a
// declined card shows its reason in the phone app (on the restaurant
// terminal, where cards are presented by hand); the host's merchant API
// has every payment; the phone app lists the back office's open orders and
// pays one, which the back office marks paid once the host confirms it
// (the report sent again after the back office was out of reach; a forged
// report does not pay, a revoked device is refused); Ctrl-C stops the demo
// cleanly. Screenshots of the
// back office are kept in the directory printed at the start.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { DESKTOP, POSNET_BIN, launchChromium, outputDir, until } from "./deployment.mjs";

/// The demo's ports before the offset (crates/posnet/src/demo_cmd.rs).
const DEMO_PORTS = [5800, 5880, 8600, 8480, 8481, 8443, 8444];

/// An offset that puts every demo port on a free loopback port, below the
/// ephemeral range other tests' servers get theirs from, and far from the
/// defaults (8443 and the rest) other tests use.
async function freeOffset() {
  const free = (port) =>
    new Promise((resolve) => {
      const s = net.createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
  for (let tries = 0; tries < 100; tries++) {
    const offset = 12_000 + Math.floor(Math.random() * 12_000);
    let ok = true;
    for (const p of DEMO_PORTS) ok = ok && (await free(p + offset));
    if (ok) return offset;
  }
  throw new Error("no free set of ports for the demo");
}

let dir;
let demo;
/// Everything the demo printed on its standard output (and on its
/// standard error, for failure messages).
let printed = "";
let errors = "";
/// What the ready message says, parsed.
let ready;
let phone;
let desk;
let shots;
let office;

/// The word after `label` on the line of the ready message that has it.
function wordAfter(label, text = printed) {
  const line = text.split("\n").find((l) => l.includes(label));
  assert.ok(line, `the demo printed no line with ${label}:\n${text}`);
  return line.slice(line.indexOf(label) + label.length).trim().split(/\s+/)[0];
}

/// Runs a command line the demo printed, as a shell would, in the
/// directory the demo runs in; returns its output.
function shell(line) {
  const r = spawnSync("sh", ["-c", line], { cwd: dir, encoding: "utf8" });
  assert.equal(r.status, 0, `${line} failed: ${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

function posnet(args) {
  const r = spawnSync(POSNET_BIN, args, { cwd: dir, encoding: "utf8" });
  assert.equal(r.status, 0, `posnet ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/// Presents test card `card` on the terminal whose screen is at `screen`
/// once a payment waits for one there.
async function presentWhenAsked(screen, card) {
  await until(`the terminal at ${screen} asks for a card`, () =>
    /Present card/.test(JSON.parse(posnet(["terminal", "status", "--url", screen])).display),
  );
  posnet(["terminal", "present", "--card", card, "--url", screen]);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `demo-${name}.png`), fullPage: true });
}

/// Text of the back office's page body.
const main = () => office.locator("main").innerText();

before(async () => {
  shots = outputDir();
  console.log(`screenshots: ${shots}`);
  dir = mkdtempSync(path.join(os.tmpdir(), "posnet-demo-browser-"));
  const offset = await freeOffset();
  demo = spawn(POSNET_BIN, ["demo", "--data-dir", "posnet-data", "--port-offset", String(offset)], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  demo.stderr.on("data", (d) => (errors += d));
  const lines = readline.createInterface({ input: demo.stdout });
  await new Promise((resolve, reject) => {
    lines.on("line", (line) => {
      printed += `${line}\n`;
      if (line.startsWith("Ctrl-C stops everything")) resolve();
    });
    demo.once("close", (code) => reject(new Error(`posnet demo exited with ${code} before it was ready:\n${printed}\n${errors}`)));
  });
  const codes = printed.split("\n").filter((l) => l.trim().startsWith("pairing code ")).map((l) => l.trim().slice("pairing code ".length));
  const screens = printed.split("\n").filter((l) => / screen http/.test(l)).map((l) => wordAfter(" screen ", l));
  const payLine = printed.split("\n")[printed.split("\n").findIndex((l) => l === "Try a payment:") + 1].trim();
  ready = {
    app: wordAfter("Phone web app"),
    retail: { pairing: codes[0], screen: screens[0] },
    restaurant: { pairing: codes[1], screen: screens[1] },
    backOffice: wordAfter("Back office").replace(/\/$/, ""),
    ownerPassword: wordAfter("owner    password"),
    ownerCode: printed.split("\n").find((l) => l.includes("owner    password")).split("the one-time code of: ")[1],
    api: wordAfter("merchant API "),
    apiKeyFile: wordAfter("(key in ").replace(/\)$/, ""),
    payLine,
  };
  assert.equal(codes.length, 2, printed);
  assert.equal(screens.length, 2, printed);
  phone = await launchChromium();
  desk = await launchChromium([], DESKTOP);
  office = await desk.context.newPage();
});

after(async () => {
  await phone?.close();
  await desk?.close();
  // After a failure the demo may still run: Ctrl-C stops its children
  // (each in a process group of its own) too; SIGKILL if that hangs.
  if (demo && demo.exitCode === null && demo.signalCode === null) {
    const closed = new Promise((resolve) => demo.once("close", resolve));
    demo.kill("SIGINT");
    const stuck = setTimeout(() => demo.kill("SIGKILL"), 120_000);
    await closed;
    clearTimeout(stuck);
  }
  if (dir) {
    if (process.env.POSNET_KEEP_TEST_DIRS) console.log(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
});

test("the phone web app pairs with the retail counter by the printed code and is paid 12.50", async () => {
  const page = await phone.context.newPage();
  await page.goto(ready.app);
  await page.fill("#pair-code", ready.retail.pairing);
  await page.click("#pair-button");
  await page.locator("#view-paired").waitFor();
  assert.equal(await page.locator("#paired-poi").innerText(), "T0000001");
  await page.click("#paired-done");
  await page.locator("#currency", { hasText: "CNY" }).waitFor();
  await page.fill("#amount", "12.50");
  await page.click("#pay-button");
  // The counter presents the approved card by itself.
  await page.locator("#result-banner", { hasText: "APPROVED" }).waitFor();
  assert.equal(await page.locator("#result-amount").innerText(), "CNY 12.50");
  await page.screenshot({ path: path.join(shots, "demo-phone-approved.png") });
  await page.close();
});

test("the printed posnet phone pay line pays", () => {
  assert.match(ready.payLine, / phone --data-dir \S+ pay 12\.50 --currency CNY$/);
  const out = shell(ready.payLine);
  assert.match(out, /payment of 12\.50 CNY: done, amount 12\.50 CNY/);
  assert.match(out, /^APPROVED$/m);
});

test("the owner logs in with password and one-time code; the dashboard and the transactions list show both payments", async () => {
  await office.goto(`${ready.backOffice}/`);
  await office.waitForURL(/\/login/);
  await office.fill("input[name=name]", "owner");
  await office.fill("input[name=password]", ready.ownerPassword);
  await office.click("button[type=submit]");
  await office.locator(".error").waitFor();
  // A code is needed, and the demo prints the command that gives it.
  await office.fill("input[name=name]", "owner");
  await office.fill("input[name=password]", ready.ownerPassword);
  await office.fill("input[name=code]", shell(ready.ownerCode).trim());
  await office.click("button[type=submit]");
  await office.waitForURL(`${ready.backOffice}/`);
  // The host's webhooks reach the back office shortly after each payment.
  await until("the dashboard shows two payments", async () => {
    await office.reload();
    return /Sales\s+25\.00 CNY\s+2 payments/.test(await main());
  });
  assert.match(await main(), /T0000001\s+2\s+25\.00 CNY/);
  await shot(office, "dashboard");
  await office.goto(`${ready.backOffice}/transactions`);
  const rows = office.locator("main table tbody tr");
  assert.equal(await rows.count(), 2);
  for (let i = 0; i < 2; i++) {
    const row = await rows.nth(i).innerText();
    assert.match(row, /T0000001\s+sale\s+approved\s+12\.50/, row);
    assert.match(row, /620000\*{6}0005/, row);
  }
});

test("a table's order of two dishes, split equally, is paid part by part on the restaurant terminal and the table is freed", async () => {
  await office.goto(`${ready.backOffice}/tables`);
  await office.click("form[action='/tables/1/open'] button");
  await office.waitForURL(/\/orders\/\d+$/);
  const order = office.url();
  const id = /\/orders\/(\d+)$/.exec(order)[1];
  for (const dish of ["Beef noodle soup", "Dumplings (8)"]) {
    const item = await office.locator("select[name=item] option", { hasText: `${dish} — ` }).getAttribute("value");
    await office.selectOption("select[name=item]", item);
    await office.click(`form[action='/orders/${id}/lines'] button`);
    await office.waitForURL(order);
  }
  assert.match(await main(), /Total\s+64\.00 CNY/);
  await office.click(`a[href='/orders/${id}/split']`);
  await office.fill("input[name=parts]", "2");
  await office.click("form:has(input[name=mode][value=equal]) button");
  await office.waitForURL(order);
  assert.match(await main(), /1\s+32\.00 CNY\s+to pay/);
  assert.match(await main(), /2\s+32\.00 CNY\s+to pay/);
  await shot(office, "split-bill");
  for (const part of ["1", "2"]) {
    const form = office.locator(`form[action='/orders/${id}/pay']:has(input[name=part][value='${part}'])`);
    await form.locator("select[name=terminal]").selectOption("T0000002");
    // Pay answers at once with the payment's status page, which reloads
    // itself (no script) and shows the terminal's display until the card
    // is presented on the restaurant terminal.
    await form.locator("button").click();
    await office.waitForURL(/\/payments\/\d+$/);
    await office.locator("#progress", { hasText: "Present card" }).waitFor();
    assert.equal(await office.locator("meta[http-equiv=refresh]").getAttribute("content"), "1");
    if (part === "1") await shot(office, "payment-under-way");
    await presentWhenAsked(ready.restaurant.screen, "approved");
    await office.locator("#payment-status", { hasText: "approved" }).waitFor();
    assert.equal(await office.locator("meta[http-equiv=refresh]").count(), 0, "it stops reloading");
    await office.click("text=Back to the order");
    await office.waitForURL(order);
    assert.match(await main(), new RegExp(`${part}\\s+32\\.00 CNY\\s+paid`));
  }
  for (const part of ["1", "2"]) {
    assert.match(await main(), new RegExp(`32\\.00 CNY\\s+${part}\\s+T0000002\\s+approved`));
  }
  assert.match(await main(), /Status\s+paid/);
  assert.match(await main(), /Paid\s+64\.00 CNY/);
  await shot(office, "split-bill-paid");
  await office.goto(`${ready.backOffice}/tables`);
  assert.match(await main(), /Table 1\s+2 seats · free/);
  await office.goto(`${ready.backOffice}/`);
  await until("the dashboard shows four payments", async () => {
    await office.reload();
    return /Sales\s+89\.00 CNY\s+4 payments/.test(await main());
  });
  assert.match(await main(), /T0000002\s+2\s+64\.00 CNY/);
  await shot(office, "dashboard-day");
});

test("a declined card shows its reason in the phone app (restaurant terminal, card presented by hand)", async () => {
  const page = await phone.context.newPage();
  const app = ready.restaurant.pairing.replace(/^posnet-pair:\/\/([^?]+)\?.*$/, "https://$1/app/");
  await page.goto(app);
  await page.fill("#pair-code", ready.restaurant.pairing);
  await page.click("#pair-button");
  await page.locator("#view-paired").waitFor();
  assert.equal(await page.locator("#paired-poi").innerText(), "T0000002");
  await page.click("#paired-done");
  await page.fill("#amount", "12.50");
  await page.click("#pay-button");
  await page.locator("#progress", { hasText: "Present card" }).waitFor();
  posnet(["terminal", "present", "--card", "insufficient_funds", "--url", ready.restaurant.screen]);
  await page.locator("#result-banner", { hasText: "DECLINED" }).waitFor();
  assert.match(await page.locator("#result-reason").innerText(), /Insufficient funds \(Refusal, response code 51\)/);
  await page.screenshot({ path: path.join(shots, "demo-phone-declined.png") });
  await page.close();
});

test("the phone app lists the back office's open orders and pays one, which the back office marks paid once the host confirms it; a forged report and a revoked device are refused", async () => {
  // The owner registers the phone as a cashier device; the page shows its
  // token once, and a link to the retail counter's app carrying it.
  await office.goto(`${ready.backOffice}/devices`);
  await office.fill("input[name=name]", "counter phone");
  await office.click("form[action='/devices'] button");
  const token = (await office.locator("#device-token").innerText()).trim();
  assert.match(token, /^[0-9a-f]{64}$/);
  const appOrigin = new URL(ready.app).origin;
  const link = await office.locator("a.device-link").first().getAttribute("href");
  assert.equal(link, `${appOrigin}/app/#office=${ready.backOffice}&token=${token}`);
  assert.equal(await office.locator(".qr svg").count(), 1);
  await shot(office, "device-registered");
  // A shop sale of a mug (35.00), left open.
  await office.goto(`${ready.backOffice}/retail?barcode=6901234567908`);
  await office.click("form[action='/retail/sales'] button");
  await office.waitForURL(/\/orders\/\d+$/);
  const order = /\/orders\/(\d+)$/.exec(office.url())[1];
  assert.match(await main(), /To pay\s+35\.00 CNY/);

  // The phone (paired with the retail counter earlier) opens the link.
  const page = await phone.context.newPage();
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  await page.goto(link);
  await page.locator("#view-pay").waitFor();
  assert.equal(new URL(page.url()).hash, "", "the token leaves the address bar");
  await page.click("#tabs button[data-view=orders]");
  const item = page.locator(`#orders-list li[data-order='${order}']`);
  await item.waitFor();
  assert.match(await item.innerText(), new RegExp(`ORDER-${order} · 1 × Ceramic mug`));
  await page.screenshot({ path: path.join(shots, "demo-phone-orders.png") });
  // The counter presents the approved card by itself; the back office is
  // out of reach when the phone reports: the order stays blocked there.
  const reports = `${ready.backOffice}/api/v1/orders/${order}/payments/*`;
  await page.route(reports, (route) => route.abort("connectionrefused"));
  await item.locator("button").click();
  await page.locator("#result-banner", { hasText: "APPROVED" }).waitFor();
  assert.equal(await page.locator("#result-amount").innerText(), "CNY 35.00");
  await page.locator("#result-office", { hasText: "was not told" }).waitFor();
  await office.goto(`${ready.backOffice}/orders/${order}`);
  assert.match(await main(), /Status\s+open/);
  // Back in reach, the report is sent again when the list is opened.
  await page.unroute(reports);
  await page.click("#tabs button[data-view=orders]");
  // (The list is asked for after the reports kept are sent.)
  await page.locator("#orders-list li", { hasText: "No open orders." }).waitFor();
  assert.equal(await page.locator("#orders-error").innerText(), "", "nothing is left unsent");
  await page.screenshot({ path: path.join(shots, "demo-phone-order-paid.png") });
  await office.goto(`${ready.backOffice}/orders/${order}`);
  assert.match(await main(), /Status\s+paid/);
  assert.match(await main(), /35\.00 CNY\s+T0000001\s+approved\s+approved on the device; confirmed by the host's transaction/);
  await shot(office, "order-paid-by-phone");

  // A report of a payment the host never saw leaves the order unpaid.
  await office.goto(`${ready.backOffice}/retail?barcode=6901234567892`);
  await office.click("form[action='/retail/sales'] button");
  await office.waitForURL(/\/orders\/\d+$/);
  const forged = /\/orders\/(\d+)$/.exec(office.url())[1];
  const api = (method, p, body) =>
    fetch(`${ready.backOffice}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body && JSON.stringify(body),
    });
  const taken = await (await api("POST", `/api/v1/orders/${forged}/payments`, { terminal: "T0000001" })).json();
  const answer = await (
    await api("POST", `/api/v1/orders/${forged}/payments/${taken.payment}`, {
      outcome: "approved", poi_transaction_id: "000001.999999", acquirer_terminal_id: "T0000001", approval_code: "000000",
    })
  ).json();
  assert.equal(answer.status, "awaiting_confirmation");
  assert.equal(answer.order_status, "open");
  await office.reload();
  assert.match(await main(), /Status\s+open/);
  assert.match(await main(), /awaiting confirmation/);

  // Revoked, the phone's token is refused.
  await office.goto(`${ready.backOffice}/devices`);
  await office.click("form[action$='/revoke'] button");
  assert.match(await main(), /revoked/);
  await page.click("#tabs button[data-view=orders]");
  await page.locator("#orders-error", { hasText: "refused this phone's device token" }).waitFor();
  assert.equal((await api("GET", "/api/v1/open-orders")).status, 401);
  // Nothing was blocked by the app's policy or by CORS on the way.
  assert.deepEqual(problems.filter((p) => /Content Security Policy|CORS|blocked/i.test(p)), []);
  await page.close();
});

test("the host's merchant API has every payment, with the key the demo names", async () => {
  const key = readFileSync(path.resolve(dir, ready.apiKeyFile), "utf8").trim();
  const answer = await (await fetch(`${ready.api}/v1/transactions`, { headers: { authorization: `Bearer ${key}` } })).json();
  const summary = answer.transactions
    .map((t) => `${t.terminal_id} ${t.kind} ${t.state} ${t.amount}`)
    .sort();
  assert.deepEqual(summary, [
    "T0000001 sale approved 1250",
    "T0000001 sale approved 1250",
    "T0000001 sale approved 3500",
    "T0000002 sale approved 3200",
    "T0000002 sale approved 3200",
    "T0000002 sale declined 1250",
  ]);
});

test("Ctrl-C stops the demo cleanly", async () => {
  const exited = new Promise((resolve) => demo.once("close", (code, signal) => resolve({ code, signal })));
  demo.kill("SIGINT");
  // A safety net: the demo waits up to 90 s for a child to stop.
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("posnet demo did not stop within 120 s")), 120_000).unref());
  assert.deepEqual(await Promise.race([exited, timeout]), { code: 0, signal: null });
  assert.match(printed, /Stopped\. Run the same command again/);
});
