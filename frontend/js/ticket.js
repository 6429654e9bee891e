// The order ticket: symbol, side, type, time in force, post-only, price, quantity. Checks the
// API's own rules as you type (price a multiple of the tick, quantity of the lot, both positive,
// no price on a market order, post-only only on a GTC limit) with the API's wording, then sends
// `POST /api/v1/orders` and shows the exchange's answer, refusals included. ↑/↓ in the price or
// quantity field moves it by one tick or lot.

import { api, explain } from "./api.js";
import { byId, say } from "./dom.js";
import { addSteps, clientOrderId, isMultiple, isPositive, parseDecimal } from "./format.js";
import * as session from "./session.js";
import * as state from "./state.js";

/** The rule broken by each field, or none: {price?: text, qty?: text, post_only?: text}. */
export function check(order, spec) {
  const errors = {};
  if (order.type === "market") {
    if (order.price) errors.price = "price must be absent for a market order";
  } else if (!order.price) {
    errors.price = "price is required for a limit order";
  } else if (!parseDecimal(order.price)) {
    errors.price = `price ${JSON.stringify(order.price)} is not a decimal number`;
  } else if (!isPositive(order.price)) {
    errors.price = "price must be positive";
  } else if (!isMultiple(order.price, spec.tick)) {
    errors.price = `price is not a multiple of ${spec.tick}`;
  }
  if (!order.qty) errors.qty = "qty is required";
  else if (!parseDecimal(order.qty)) errors.qty = `qty ${JSON.stringify(order.qty)} is not a decimal number`;
  else if (!isPositive(order.qty)) errors.qty = "qty must be positive";
  else if (!isMultiple(order.qty, spec.lot)) errors.qty = `qty is not a multiple of ${spec.lot}`;
  else if (spec.max_qty && Number(order.qty) > Number(spec.max_qty)) errors.qty = `qty exceeds the maximum ${spec.max_qty}`;
  if (order.post_only && (order.type !== "limit" || order.time_in_force !== "gtc")) {
    errors.post_only = 'post_only needs a limit order with time_in_force "gtc"';
  }
  return errors;
}

export function mountTicket({ onPlaced }) {
  const form = byId("ticket");
  const f = form.elements;
  const message = byId("ticket-message");
  const touched = new Set();

  state.on("symbols", (symbols) => {
    const current = state.get("symbol");
    f.symbol.replaceChildren(...symbols.map((s) => new Option(s.symbol, s.symbol, false, s.symbol === current)));
  });
  state.on("symbol", (name) => {
    if (f.symbol.value !== name) f.symbol.value = name;
    showSpec();
    validate();
  });
  f.symbol.addEventListener("change", () => state.set("symbol", f.symbol.value));

  const spec = () => state.get("symbols")?.find((s) => s.symbol === f.symbol.value);

  function showSpec() {
    const s = spec();
    byId("t-tick").textContent = s?.tick ?? "—";
    byId("t-lot").textContent = s?.lot ?? "—";
    f.price.placeholder = s ? `a multiple of ${s.tick}` : "";
    f.qty.placeholder = s ? `a multiple of ${s.lot}` : "";
  }

  function read() {
    return {
      symbol: f.symbol.value,
      side: f.side.value,
      type: f.type.value,
      time_in_force: f.time_in_force.value,
      post_only: f.post_only.checked,
      price: f.price.value.trim(),
      qty: f.qty.value.trim(),
    };
  }

  /** Shows the broken rules of touched fields (all of them with `all`); true if none. */
  function validate(all = false) {
    const s = spec();
    if (!s) return false;
    const errors = check(read(), s);
    for (const field of ["price", "qty", "post_only"]) {
      const show = (all || touched.has(field)) && errors[field];
      const out = byId(`t-${field.replace("_", "-")}-error`);
      out.textContent = show || "";
      f[field].setAttribute("aria-invalid", show ? "true" : "false");
    }
    return Object.keys(errors).length === 0;
  }

  function syncType() {
    const market = f.type.value === "market";
    f.price.disabled = market;
    if (market) {
      f.price.value = "";
      if (f.time_in_force.value === "gtc") f.time_in_force.value = "ioc";
      f.post_only.checked = false;
    }
    f.post_only.disabled = market;
    validate();
  }
  f.type.addEventListener("change", syncType);

  for (const name of ["price", "qty", "post_only", "time_in_force"]) {
    f[name].addEventListener("input", () => {
      touched.add(name);
      validate();
    });
  }
  for (const [name, stepOf] of [["price", (s) => s.tick], ["qty", (s) => s.lot]]) {
    f[name].addEventListener("keydown", (e) => {
      const s = spec();
      if (!s || (e.key !== "ArrowUp" && e.key !== "ArrowDown")) return;
      e.preventDefault();
      const base = parseDecimal(f[name].value) ? f[name].value : name === "price" ? s.reference : "0";
      f[name].value = addSteps(base, stepOf(s), e.key === "ArrowUp" ? 1 : -1);
      touched.add(name);
      validate();
    });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!validate(true)) {
      say(message, "Fix the marked fields first.", "error");
      form.querySelector('[aria-invalid="true"]')?.focus();
      return;
    }
    const order = { client_order_id: clientOrderId(), ...read() };
    if (order.type === "market") delete order.price;
    const button = byId("place");
    button.disabled = true;
    say(message, "Sending…");
    try {
      session.needWriteToken();
      const answer = await api("POST", "/api/v1/orders", order);
      say(message, `Order ${answer.order_id} ${answer.status}: ${order.side} ${order.qty} ${order.symbol}${order.price ? ` @ ${order.price}` : " at market"}.`, "ok");
      onPlaced({ ...order, order_id: answer.order_id, status: answer.status });
    } catch (e) {
      say(message, `Refused: ${explain(e)}`, "error");
    } finally {
      button.disabled = false;
    }
  });

  showSpec();
  syncType();

  return {
    /** A ladder level picked: its price, and the side that would trade against it. */
    pick(price, levelSide) {
      if (f.type.value === "market") {
        f.type.value = "limit";
        syncType();
      }
      f.price.value = price;
      f.side.value = levelSide === "sell" ? "buy" : "sell";
      touched.add("price");
      validate();
      f.qty.focus();
    },
    /** A later word about an order (an outcome from the order feed). */
    note(text, kind) {
      say(message, text, kind);
    },
  };
}
