// The browser test of the desk, the operator page and the system map, driven the way a person uses
// them (labels, roles, visible text) in headless Chromium through playwright-core.
//
//   LAB_URL=http://127.0.0.1:PORT LAB_ARTIFACTS=/some/dir node frontend/tests/desk.test.mjs
//
// A harness (the Rust integration test) runs the stack and this script, and does what the script
// cannot: the script prints one line `HARNESS {"op": "kill"|"start", "name": "gateway-1"}` or
// `HARNESS {"op": "grant", "user": "…", "role": "operator"}` to stdout and reads one line back
// from stdin, `ok` or `error: …`. Everything else on stdout/stderr is log. Exit 0 when every check
// passed; otherwise 1 with the first failed check's message. Each check waits at most CHECK_MS;
// the whole run stops itself after TOTAL_MS.
//
// DESK_TEST_LENIENT=1 (development only) logs a failed check that needs a backend route still
// being built as PENDING and goes on; the harness runs it strictly.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";
import { addSteps } from "../js/format.js";

const BASE = (process.env.LAB_URL ?? "").replace(/\/$/, "");
const ARTIFACTS = process.env.LAB_ARTIFACTS ?? "desk-test-artifacts";
const LENIENT = process.env.DESK_TEST_LENIENT === "1";
const CHECK_MS = Number(process.env.DESK_CHECK_MS ?? 30_000);
const TOTAL_MS = 330_000; // itest/tests/browser.rs stops the script at 360 s
const DESK = { width: 1280, height: 800 };

if (!BASE) {
  console.error("set LAB_URL (e.g. http://127.0.0.1:8080)");
  process.exit(2);
}
mkdirSync(ARTIFACTS, { recursive: true });

let browser;
const pending = [];
const cspErrors = [];
const started = Date.now();

async function fail(message) {
  console.error(`\nFAILED: ${message}`);
  await browser?.close().catch(() => {});
  process.exit(1);
}

setTimeout(() => fail(`the whole run took more than ${TOTAL_MS / 1000} s`), TOTAL_MS);

/** One check: its name, what it does; the first failure ends the run. */
async function check(name, fn, { needsBackend = false } = {}) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    const why = String(e?.message ?? e).split("\n").slice(0, 6).join("\n     ");
    if (needsBackend && LENIENT) {
      pending.push(name);
      console.log(`PENDING ${name}: ${why}`);
      return;
    }
    await fail(`${name}: ${why}`);
  }
}

/** Polls `fn` until it returns something truthy; its value, or throws `what` after `ms`. */
async function until(what, fn, ms = CHECK_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what} (waited ${ms / 1000} s)${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The harness protocol.
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function harness(op) {
  process.stdout.write(`HARNESS ${JSON.stringify(op)}\n`);
  const { value, done } = await stdinLines.next();
  const answer = (value ?? "").trim();
  if (done || answer !== "ok") throw new Error(`harness ${JSON.stringify(op)} answered ${done ? "nothing (stdin closed)" : JSON.stringify(answer)}`);
}

async function json(path) {
  const res = await fetch(BASE + path);
  return res.json();
}

function watch(page, who) {
  page.on("console", (m) => {
    const text = m.text();
    if (/Content Security Policy/i.test(text)) cspErrors.push(`${who}: ${text}`);
    if (m.type() === "error" && !/Failed to load resource/.test(text)) console.log(`  [${who} console.${m.type()}] ${text}`);
  });
  page.on("pageerror", (e) => console.log(`  [${who} pageerror] ${e.message}`));
}

async function newDesk(name, viewport = DESK) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(2000);
  // Page loads (the chart library, the modules) and screenshots get a slow machine's time.
  context.setDefaultNavigationTimeout(CHECK_MS);
  const page = await context.newPage();
  watch(page, name);
  await page.goto(`${BASE}/`);
  await live(page);
  return page;
}

const connState = (page) => page.locator("#conn-status").getAttribute("data-state");

async function live(page) {
  await until(`${page.url()} shows the feed live`, async () => (await connState(page)) === "live");
}

/** Waits until `locator`'s text matches `re`; the error names the last text seen. */
async function untilText(what, locator, re, ms = CHECK_MS) {
  let seen = "";
  try {
    await until(what, async () => re.test((seen = await text(locator))), ms);
  } catch (e) {
    throw new Error(`${e.message}; it reads ${JSON.stringify(seen)}`);
  }
}

async function text(locator) {
  return (await locator.textContent())?.trim() ?? "";
}

async function authMessage(page, re) {
  return untilText(`the account panel says ${re}`, page.locator("#auth-message"), re);
}

async function signup(page, username, password) {
  const form = page.locator("#auth-form");
  await form.getByLabel("Username").fill(username);
  await form.getByLabel("Password").fill(password);
  await form.getByRole("button", { name: "Sign up" }).click();
}

async function signedIn(page, username) {
  await until(`${username} is signed in`, async () => (await text(page.locator("#whoami"))).startsWith(username));
  await page.getByRole("button", { name: "Log out" }).waitFor({ timeout: CHECK_MS });
}

/** Fills the ticket and sends it; the ticket's answer text. */
async function order(page, { symbol = "ABC", side, type = "limit", price, qty }) {
  const ticket = page.locator("#ticket");
  await ticket.getByLabel("Symbol").selectOption(symbol);
  await ticket.getByText(side === "buy" ? "Buy" : "Sell", { exact: true }).click();
  await ticket.getByLabel("Type").selectOption(type);
  if (price !== undefined) await ticket.getByLabel("Price", { exact: true }).fill(price);
  await ticket.getByLabel("Quantity").fill(qty);
  const message = page.locator("#ticket-message");
  await message.evaluate((el) => (el.textContent = ""));
  await ticket.getByRole("button", { name: "Place order" }).click();
  return until("the ticket answers", async () => {
    const t = await text(message);
    return t && t !== "Sending…" ? t : null;
  });
}

/** Sends an order that the API must accept (202); its exchange id. The book's later rejection
 *  may already have replaced the ticket's "accepted" (a halted symbol answers within ms). */
async function placed(page, spec, { bookMayReject = false } = {}) {
  const answer = await order(page, spec);
  const id = (/^Order (\d+) accepted/.exec(answer) ?? (bookMayReject && /^Order (\d+): the book rejected/.exec(answer)))?.[1];
  if (!id) throw new Error(`the order was not accepted: ${answer}`);
  return id;
}

const orderRow = (page, id) => page.locator(`tr[data-order-id="${id}"]`);

async function orderStatus(page, id, status, where = "") {
  await until(`order ${id} shows ${status}${where}`, async () => (await orderRow(page, id).first().getAttribute("data-status", { timeout: 500 })) === status);
}

/** A price at which a new sell becomes the best ask alone (so a buy at it meets only that
 *  order), in a symbol whose book leaves room for it. */
async function crossingPrice() {
  const { symbols } = await json("/api/v1/symbols");
  for (const s of symbols) {
    const book = await json(`/api/v1/book/${s.symbol}?depth=1`);
    const ask = book.asks[0]?.[0];
    const bid = book.bids[0]?.[0];
    if (!ask && !bid) return { spec: s, price: s.reference };
    const below = ask ? addSteps(ask, s.tick, -1) : addSteps(bid, s.tick, 1);
    if (!bid || Number(below) > Number(bid)) return { spec: s, price: below };
  }
  throw new Error("no symbol has room between its best bid and ask");
}

// ---------------------------------------------------------------------------------------------

browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const tag = Date.now().toString(36).slice(-6);
const password = `pw-${tag}-long-enough`;
const [alice, bob, olga] = [`alice-${tag}`, `bob-${tag}`, `olga-${tag}`];
console.log(`desk test against ${BASE}: users ${alice}, ${bob}, ${olga}; screenshots in ${ARTIFACTS}`);

// The market simulator (when the stack runs one) re-quotes and crosses all the time: it is held
// down while the test trades, so the crossing below meets only the test's own orders.
let simStopped = false;
await check("the market simulator, if running, is paused for the test", async () => {
  const system = await json("/api/v1/system").catch(() => null);
  if (system?.nodes?.some((n) => n.name === "market-sim" && n.up)) {
    await harness({ op: "kill", name: "market-sim" });
    simStopped = true;
  }
});

let a;
let b;
await check("the desk loads and its feed goes live", async () => {
  a = await newDesk("alice");
  b = await newDesk("bob");
});

await check("sign-up shows the API's rules for bad names and passwords", async () => {
  await signup(a, "ab", password);
  await authMessage(a, /username must be 3 to 32 characters/);
  await signup(a, alice, "short");
  await authMessage(a, /password must be at least 10 characters/);
});

await check("two traders sign up (and are logged in)", async () => {
  await signup(a, alice, password);
  await signup(b, bob, password);
  await signedIn(a, alice);
  await signedIn(b, bob);
});

await check("the ticket checks tick, lot and market orders as you type", async () => {
  const t = a.locator("#ticket");
  await t.getByLabel("Symbol").selectOption("ABC");
  await t.getByLabel("Price", { exact: true }).fill("100.001");
  await until("the price error", async () => (await text(a.locator("#t-price-error"))) === "price is not a multiple of 0.01");
  await t.getByLabel("Quantity").fill("1.5");
  await until("the qty error", async () => (await text(a.locator("#t-qty-error"))) === "qty is not a multiple of 1");
  await t.getByLabel("Quantity").fill("0");
  await until("the positive qty error", async () => (await text(a.locator("#t-qty-error"))) === "qty must be positive");
  await t.getByLabel("Type").selectOption("market");
  if (!(await t.getByLabel("Price", { exact: true }).isDisabled())) throw new Error("a market order still takes a price");
  await t.getByLabel("Type").selectOption("limit");
  await t.getByLabel("Time in force").selectOption("gtc");
});

let cross;
let sell;
let buy;
await check("a resting sell shows in the seller's open orders and on both ladders", async () => {
  cross = await crossingPrice();
  console.log(`     crossing ${cross.spec.symbol} at ${cross.price}`);
  sell = await placed(a, { symbol: cross.spec.symbol, side: "sell", price: cross.price, qty: "5" });
  await orderStatus(a.locator("#open-orders"), sell, "resting", " in Open");
  await b.locator("#ticket").getByLabel("Symbol").selectOption(cross.spec.symbol);
  await b.getByRole("button", { name: new RegExp(`^Ask ${cross.price.replace(".", "\\.")}, quantity`) }).first().waitFor({ timeout: CHECK_MS });
});

await check("clicking the ask puts its price in the buyer's ticket; the buy crosses", async () => {
  await b.getByRole("button", { name: new RegExp(`^Ask ${cross.price.replace(".", "\\.")}, quantity`) }).first().click();
  const t = b.locator("#ticket");
  if ((await t.getByLabel("Price", { exact: true }).inputValue()) !== cross.price) throw new Error("the ladder's price did not reach the ticket");
  if (!(await t.getByRole("radio", { name: "Buy" }).isChecked())) throw new Error("clicking an ask should set the side to buy");
  buy = await placed(b, { symbol: cross.spec.symbol, side: "buy", price: cross.price, qty: "5" });
});

await check("the trade is on both tapes and on the chart", async () => {
  for (const page of [a, b]) {
    await page.getByRole("table", { name: "Trades" }).locator("tbody tr", { hasText: cross.price }).first().waitFor({ timeout: CHECK_MS });
  }
  await until("the chart has a bar", async () => Number(await a.locator("#chart").getAttribute("data-bars")) >= 1);
  await until("the chart's hook agrees", () => a.evaluate(() => window.__desk.chart.bars() >= 1));
});

await check("the fill is in both traders' order history", async () => {
  await orderStatus(a.locator("#order-history"), sell, "filled", " for the seller");
  await orderStatus(b.locator("#order-history"), buy, "filled", " for the buyer");
  const row = b.locator(`#order-history tr[data-order-id="${buy}"]`);
  await row.getByText("Details").click();
  const fills = row.getByRole("list", { name: `Fills of order ${buy}` });
  await until("the buyer's fill is listed", async () => new RegExp(`\\d+ @ ${cross.price.replace(".", "\\.")}`).test(await fills.textContent()));
});

await check("the order's path shows all five hops with durations", async () => {
  const row = b.locator(`#order-history tr[data-order-id="${buy}"]`);
  const fig = row.locator("figure.waterfall");
  await until("5 of 5 hops", async () => (await fig.getAttribute("data-hops")) === "5");
  const times = await fig.locator(".hop-time").allTextContents();
  if (times.length !== 4 || times.some((t) => !/\d (s|ms|µs|ns)$/.test(t))) throw new Error(`hop durations: ${JSON.stringify(times)}`);
  console.log(`     hops: ${times.join(", ")}`);
});

let resting;
await check("an open order is amended (new price and quantity)", async () => {
  const far = addSteps(cross.price, cross.spec.tick, 40);
  const farther = addSteps(far, cross.spec.tick, 1);
  resting = await placed(a, { symbol: cross.spec.symbol, side: "sell", price: far, qty: "2" });
  await orderStatus(a.locator("#open-orders"), resting, "resting", " in Open");
  const row = a.locator(`#open-orders tr[data-order-id="${resting}"]`);
  await row.getByRole("button", { name: `Amend order ${resting}` }).click();
  const form = a.getByRole("form", { name: `Amend order ${resting}` });
  await form.getByLabel("New price").fill(farther);
  await form.getByLabel("New qty").fill("3");
  await form.getByRole("button", { name: "Send amend" }).click();
  await untilText("the amend is acknowledged", a.locator("#orders-message"), /Amend of order \d+ sent/);
  await until(`the order shows price ${farther} and 3 open`, async () => {
    const cells = await a.locator(`#open-orders tr[data-order-id="${resting}"] td`).allTextContents();
    return cells[4] === farther && cells[5] === "3";
  });
}, { needsBackend: true });

await check("an open order is canceled", async () => {
  const row = a.locator(`#open-orders tr[data-order-id="${resting}"]`);
  await row.getByRole("button", { name: `Cancel order ${resting}` }).click();
  await orderStatus(a.locator("#order-history"), resting, "canceled", " in History");
});

await check("screenshots of the desk, laptop and phone; no sideways scrolling at 390 px", async () => {
  await a.evaluate(() => window.scrollTo(0, 0));
  await a.screenshot({ path: join(ARTIFACTS, "desk.png"), timeout: CHECK_MS });
  await a.setViewportSize({ width: 390, height: 844 });
  // The chart shrinks on a later frame (a ResizeObserver): wait for the layout, not a fixed time.
  let wide = 0;
  await until("no sideways scrolling at 390 px", async () => (wide = await a.evaluate(() => document.documentElement.scrollWidth)) <= 391, 5000).catch(() => {});
  await a.evaluate(() => window.scrollTo(0, 0));
  await a.screenshot({ path: join(ARTIFACTS, "desk-phone.png"), fullPage: true, timeout: CHECK_MS });
  if (wide > 391) throw new Error(`the page is ${wide} px wide at 390`);
  await a.setViewportSize(DESK);
});

await check("logged out, order entry is refused with the API's message", async () => {
  await a.getByRole("button", { name: "Log out" }).click();
  await until("signed out", async () => (await text(a.locator("#whoami"))) === "not signed in");
  const answer = await order(a, { symbol: cross.spec.symbol, side: "buy", price: cross.price, qty: "1" });
  if (!/^Refused: Log in .*sign in first/.test(answer)) throw new Error(`the ticket said: ${answer}`);
});

let sys;
await check("the system map shows every process up and ready", async () => {
  const context = await browser.newContext({ viewport: DESK });
  context.setDefaultTimeout(2000);
  // Page loads (the chart library, the modules) and screenshots get a slow machine's time.
  context.setDefaultNavigationTimeout(CHECK_MS);
  sys = await context.newPage();
  watch(sys, "system");
  await sys.goto(`${BASE}/system.html`);
  await sys.locator('#map [data-node="nginx"]').waitFor({ timeout: CHECK_MS });
  for (const name of ["nginx", "gateway-1", "gateway-2", "order-svc-1", "order-svc-2", "broker", "matcher", "redis"]) {
    await until(`${name} is green`, async () => (await sys.locator(`#map [data-node="${name}"]`).getAttribute("data-state")) === "ready");
  }
  await until("it says which gateway served it", async () => /^Served by gateway-[12]/.test(await text(sys.locator("#served-by"))));
}, { needsBackend: true });

await check("gateway-1 killed: the desk reconnects to gateway-2; the map shows gateway-1 red", async () => {
  // Make sure bob's socket is on gateway-1 (nginx alternates new connections between the two).
  for (let i = 0; (await b.locator("#conn-status").getAttribute("data-instance")) !== "gateway-1"; i += 1) {
    if (i === 12) throw new Error("could not get a WebSocket on gateway-1");
    await b.reload();
    await live(b);
  }
  await b.evaluate(() => {
    const el = document.getElementById("conn-status");
    window.__connStates = [el.dataset.state];
    new MutationObserver(() => window.__connStates.push(el.dataset.state)).observe(el, { attributes: true, attributeFilter: ["data-state"] });
  });
  await harness({ op: "kill", name: "gateway-1" });
  await until("the desk shows the connection lost", () => b.evaluate(() => window.__connStates.includes("disconnected")));
  console.log(`     status text while down: "${await text(b.locator("#conn-text"))}"`);
  await until("the desk is live again, on gateway-2", async () => (await connState(b)) === "live" && (await b.locator("#conn-status").getAttribute("data-instance")) === "gateway-2", 30_000);
  console.log(`     states seen: ${(await b.evaluate(() => window.__connStates)).join(" → ")}`);
});

await check("the map shows gateway-1 down", async () => {
  await until("gateway-1 is red", async () => (await sys.locator('#map [data-node="gateway-1"]').getAttribute("data-state")) === "down");
  await sys.screenshot({ path: join(ARTIFACTS, "system-gateway-1-down.png"), timeout: CHECK_MS });
}, { needsBackend: true });

await check("gateway-1 started again: the map shows it green", async () => {
  await harness({ op: "start", name: "gateway-1" });
  await until("gateway-1 is green", async () => (await sys.locator('#map [data-node="gateway-1"]').getAttribute("data-state")) === "ready", 30_000);
  await sys.screenshot({ path: join(ARTIFACTS, "system.png"), timeout: CHECK_MS });
}, { needsBackend: true });

let o;
await check("an operator (granted by the harness) finds the Operator page", async () => {
  o = await newDesk("olga");
  await signup(o, olga, password);
  await signedIn(o, olga);
  await harness({ op: "grant", user: olga, role: "operator" });
  await o.reload();
  // The link shows once the page has asked who is signed in.
  await o.getByRole("link", { name: "Operator" }).click({ timeout: CHECK_MS });
  await o.waitForURL(/operator\.html$/, { timeout: CHECK_MS });
  await untilText("olga is logged in in this tab", o.locator("#signed-in-text"), /^Signed in as \S+ \(operator\)\.$/);
});

const SYM = "ABC";
await check("a trader calling an admin action is refused with the API's 403 message", async () => {
  const t = await (await b.context()).newPage();
  watch(t, "bob-operator");
  await t.goto(`${BASE}/operator.html`);
  // A new tab has the cookie but not the token: log in here, as a person would.
  const form = t.locator("#auth-form");
  await form.getByLabel("Username").fill(bob);
  await form.getByLabel("Password").fill(password);
  await form.getByRole("button", { name: "Log in" }).click();
  // Logged in *in this tab* (its token saved): the cookie alone already shows "Log out", and a
  // write from a tab without its token is refused before it is sent.
  await untilText("bob is logged in in this tab", t.locator("#signed-in-text"), /^Signed in as \S+ \(trader\)\.$/);
  // The page warns a trader first (and the layout settles before the click).
  await untilText("the page tells bob he is a trader", t.locator("#op-message"), /a trader/);
  await t.getByLabel("Symbol to halt or resume").selectOption(SYM, { timeout: CHECK_MS });
  await t.getByRole("button", { name: "Halt" }).click();
  await untilText("the 403 is shown", t.locator("#op-message"), /^Refused: operators only/);
  await t.close();
}, { needsBackend: true });

await check(`the operator halts ${SYM}; the log and the symbol list show it`, async () => {
  await o.getByLabel("Symbol to halt or resume").selectOption(SYM, { timeout: CHECK_MS });
  await o.getByRole("button", { name: "Halt" }).click();
  await untilText("the halt is acknowledged", o.locator("#op-message"), new RegExp(`Halt of ${SYM} sent`));
  await until("the admin log has it", async () => (await o.locator(`#log-body tr[data-target="${SYM}"]`).count()) > 0, 20_000);
  await until(`${SYM} shows halted`, async () => (await o.locator(`#symbols-body tr[data-symbol="${SYM}"]`).getAttribute("data-halted")) === "true", 20_000);
  await o.screenshot({ path: join(ARTIFACTS, "operator.png"), fullPage: true, timeout: CHECK_MS });
}, { needsBackend: true });

await check(`the desk shows ${SYM} halted, and a trader's order on it is rejected as halted`, async () => {
  await b.locator("#ticket").getByLabel("Symbol").selectOption(SYM, { timeout: CHECK_MS });
  await b.locator("#halted-badge").waitFor({ state: "visible", timeout: CHECK_MS });
  const spec = (await json("/api/v1/symbols")).symbols.find((s) => s.symbol === SYM);
  const id = await placed(b, { symbol: SYM, side: "buy", price: spec.reference, qty: "1" }, { bookMayReject: true });
  await orderStatus(b.locator("#order-history"), id, "rejected", " in History");
  const status = await text(b.locator(`#order-history tr[data-order-id="${id}"] td.status`));
  if (!/halted/.test(status)) throw new Error(`the rejection reads "${status}"`);
}, { needsBackend: true });

await check(`the operator resumes ${SYM}; the desk's badge goes`, async () => {
  await o.getByLabel("Symbol to halt or resume").selectOption(SYM, { timeout: CHECK_MS });
  await o.getByRole("button", { name: "Resume" }).click();
  await untilText("the resume is acknowledged", o.locator("#op-message"), new RegExp(`Resume of ${SYM} sent`));
  await b.locator("#halted-badge").waitFor({ state: "hidden", timeout: 20_000 });
}, { needsBackend: true });

if (simStopped) {
  await check("the market simulator is started again", () => harness({ op: "start", name: "market-sim" }));
}

await check("no Content-Security-Policy violations on any page", async () => {
  if (cspErrors.length) throw new Error(cspErrors.join("\n"));
});

await browser.close();
console.log(`\n${pending.length ? `passed, with ${pending.length} check(s) PENDING the backend: ${pending.join("; ")}` : "all checks passed"} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(LENIENT && pending.length ? 3 : 0);
