// The trader's desk (index.html): wires the panels to the API, the WebSocket feed and each other.

import { api, explain } from "./api.js";
import { mountAccount } from "./account.js";
import { createChart } from "./chart.js";
import { byId, h, say } from "./dom.js";
import { mountHeader } from "./header.js";
import { createLadder } from "./ladder.js";
import { createOrders, isOpen } from "./orders.js";
import * as session from "./session.js";
import * as state from "./state.js";
import { watchSymbols } from "./symbols.js";
import { createTape } from "./tape.js";
import { mountTicket } from "./ticket.js";
import { Feed } from "./ws.js";

const feed = new Feed();
mountHeader();
mountAccount();

const ladder = createLadder(byId("ladder"), { onPick: (price, side) => ticket.pick(price, side) });
const tape = createTape(byId("tape-body"));
const chart = createChart(byId("chart"));
const orders = createOrders({
  openBody: byId("open-orders-body"),
  historyBody: byId("history-body"),
  message: byId("orders-message"),
  onChange: (list) => ladder.markMine(list.filter(isOpen)),
});
const ticket = mountTicket({ onPlaced: (order) => orders.placed(order) });

byId("chart-interval").addEventListener("change", (e) => chart.setInterval(Number(e.target.value)));

// The symbol on screen: its header, its book and trades channels.
let shown = null;
state.on("symbol", (name) => {
  if (name === shown) return;
  if (shown) {
    feed.unsubscribe(`book:${shown}`);
    feed.unsubscribe(`trades:${shown}`);
  }
  shown = name;
  ladder.clear("Waiting for the book…");
  tape.reset([]);
  chart.reset([]);
  feed.subscribe(`book:${name}`);
  feed.subscribe(`trades:${name}`);
  loadTrades(name);
  showSymbol();
});
state.on("symbols", showSymbol);

function showSymbol() {
  const spec = state.get("symbols")?.find((s) => s.symbol === shown);
  if (!spec) return;
  byId("sym-name").textContent = spec.symbol;
  byId("sym-tick").textContent = spec.tick;
  byId("sym-lot").textContent = spec.lot;
  byId("sym-ref").textContent = spec.reference;
  byId("sym-band").textContent = `±${spec.band_bps / 100}%`;
  byId("halted-badge").hidden = !spec.halted;
  document.body.dataset.halted = String(Boolean(spec.halted));
  chart.setSymbol(spec);
}

async function loadTrades(symbol) {
  try {
    const { trades } = await api("GET", `/api/v1/trades?symbol=${encodeURIComponent(symbol)}&limit=1000`);
    if (symbol !== shown) return;
    tape.reset(trades);
    chart.reset(trades);
    if (trades[0]) byId("sym-last").textContent = trades[0].price;
  } catch (e) {
    console.warn("trades:", explain(e));
  }
}

feed.on("book", (symbol, book) => symbol === shown && ladder.show(book));
feed.on("trade", (t) => {
  if (t.symbol !== shown) return;
  tape.add(t);
  chart.add(t);
  byId("sym-last").textContent = t.price;
});
feed.on("trades-reset", (symbol) => symbol === shown && loadTrades(symbol));
feed.on("orders-reset", () => orders.refresh());
feed.on("order", (frame) => {
  orders.event(frame);
  if (frame.event === "rejected") {
    const why = String(frame.reason ?? "see My orders").replaceAll("_", " ");
    ticket.note(`Order ${frame.order_id}: the book rejected ${frame.client_order_id ? "it" : "the request"} — ${why}.`, "error");
  }
});

// Signing in or out changes what the socket may carry (the cookie goes with the upgrade).
let signedInAs = null;
let feedStarted = false;
state.on("user", (user) => {
  const name = user?.username ?? null;
  if (name === signedInAs) return;
  signedInAs = name;
  if (name) feed.subscribe("orders");
  else feed.unsubscribe("orders");
  if (feedStarted) feed.restart();
});

// Test hook (the browser test reads it; harmless for people).
window.__desk = { feed, chart, orders, state };

async function start() {
  try {
    await session.refreshMe();
  } catch (e) {
    say(byId("auth-message"), `Could not ask who is signed in: ${explain(e)}`, "error");
  }
  feedStarted = true;
  feed.start();
  try {
    await watchSymbols();
    const symbols = state.get("symbols");
    state.set("symbol", symbols.some((s) => s.symbol === "ABC") ? "ABC" : symbols[0].symbol);
  } catch (e) {
    byId("ladder").replaceChildren(h("p", { class: "empty" }, `Could not read the symbols: ${explain(e)}`));
  }
}

start();
