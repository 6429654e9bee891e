// The operator page: halt / resume a symbol, set its reference price, cancel every order of an
// account, and the admin log. The API decides who may: a trader's call comes back 403 and its
// message is shown as it is.

import { api, explain, isMissingRoute } from "./api.js";
import { mountAccount } from "./account.js";
import { byId, h, say } from "./dom.js";
import { clock } from "./format.js";
import { mountHeader } from "./header.js";
import * as session from "./session.js";
import * as state from "./state.js";
import { loadSymbols, watchSymbols } from "./symbols.js";

mountHeader();
mountAccount();
const message = byId("op-message");

state.on("symbols", (symbols) => {
  for (const select of document.querySelectorAll(".symbol-select")) {
    const keep = select.value;
    select.replaceChildren(...symbols.map((s) => new Option(s.symbol, s.symbol)));
    if (keep) select.value = keep;
  }
  showReference();
  byId("symbols-body").replaceChildren(
    ...symbols.map((s) =>
      h(
        "tr",
        { dataset: { symbol: s.symbol, halted: String(Boolean(s.halted)) } },
        h("th", { scope: "row" }, s.symbol),
        h("td", { class: s.halted ? "halted" : "" }, s.halted === undefined ? "—" : s.halted ? "halted" : "trading"),
        h("td", { class: "num" }, s.reference),
        h("td", { class: "num" }, s.tick),
        h("td", { class: "num" }, s.lot),
      ),
    ),
  );
});

// Who is signed in, as last shown: the same user announced again (the session is re-read now and
// then) must not wipe the answer to an action out of the message line.
let shownUser = null;
state.on("user", (user) => {
  const who = user ? `${user.username}:${user.role}` : "";
  if (who !== shownUser) {
    shownUser = who;
    if (!user) say(message, "Log in with an operator account to use these controls.");
    else if (user.role !== "operator") say(message, `Signed in as ${user.username}, a trader: the exchange will refuse these actions.`);
    else say(message, "");
  }
  loadLog();
});

/** The reference price field's placeholder: the chosen symbol's current reference. */
function showReference() {
  const spec = state.get("symbols")?.find((s) => s.symbol === byId("ref-symbol").value);
  byId("ref-price").placeholder = spec ? `now ${spec.reference}` : "";
}
byId("ref-symbol").addEventListener("change", showReference);

/** Sends one admin action and shows the exchange's answer. */
async function act(button, path, body, done) {
  button.disabled = true;
  try {
    session.needWriteToken();
    const answer = await api("POST", path, body);
    say(message, `${done} (${answer?.status ?? "sent"}).`, "ok");
    setTimeout(() => loadSymbols().catch(() => {}), 400);
    setTimeout(loadLog, 400);
  } catch (e) {
    say(message, `Refused: ${explain(e)}`, "error");
  } finally {
    button.disabled = false;
  }
}

byId("halt-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const symbol = e.target.elements.symbol.value;
  const verb = e.submitter?.value === "resume" ? "resume" : "halt";
  act(e.submitter, `/api/v1/admin/symbols/${encodeURIComponent(symbol)}/${verb}`, undefined, `${verb === "halt" ? "Halt" : "Resume"} of ${symbol} sent`);
});

byId("reference-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const { symbol, price } = e.target.elements;
  act(e.submitter, `/api/v1/admin/symbols/${encodeURIComponent(symbol.value)}/reference`, { price: price.value.trim() }, `Reference of ${symbol.value} set to ${price.value.trim()}`);
});

byId("cancel-all-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const account = e.target.elements.account.value.trim();
  if (!account) {
    say(message, "Name the account whose orders to cancel.", "error");
    return;
  }
  act(e.submitter, `/api/v1/admin/accounts/${encodeURIComponent(account)}/cancel-all`, undefined, `Cancel of every order of ${account} sent`);
});

async function loadLog() {
  const note = byId("log-message");
  if (!state.get("user")) {
    byId("log-body").replaceChildren();
    say(note, "The log is for operators: log in.");
    return;
  }
  try {
    const { entries } = await api("GET", "/api/v1/admin/log?limit=100");
    say(note, entries.length ? "" : "No admin actions yet.");
    byId("log-body").replaceChildren(
      ...entries.map((en) =>
        h(
          "tr",
          { dataset: { action: en.action, target: en.target } },
          h("td", {}, clock(en.ts_ms * 1e6)),
          h("td", {}, en.operator),
          h("td", {}, en.action),
          h("td", {}, en.target),
          h("td", {}, typeof en.detail === "string" ? en.detail : JSON.stringify(en.detail ?? "")),
        ),
      ),
    );
  } catch (e) {
    byId("log-body").replaceChildren();
    say(note, isMissingRoute(e) ? "This exchange has no admin log yet." : explain(e), "error");
  }
}

setInterval(loadLog, 5000);
session.refreshMe().catch((e) => say(message, explain(e), "error"));
watchSymbols().catch((e) => say(message, `Could not read the symbols: ${explain(e)}`, "error"));
