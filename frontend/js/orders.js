// My orders: the open ones (cancel, amend price or quantity) and the history (status, fills, the
// reason of a rejection), each with its path through the exchange (hops.js).
//
// The list comes from `GET /api/v1/orders?status=all` when the gateway has it; an older gateway
// lacks that route, and then the orders this browser placed or saw on the `orders` channel are
// read one by one (`GET /api/v1/orders/{id}`), their ids kept in localStorage per user.

import { api, explain, isMissingRoute, ApiError } from "./api.js";
import { h, say } from "./dom.js";
import { addSteps, clock } from "./format.js";
import { waterfall } from "./hops.js";
import * as session from "./session.js";
import * as state from "./state.js";

const OPEN = new Set(["accepted", "resting", "partially_filled"]);
const LIMIT = 100;

export function isOpen(order) {
  return OPEN.has(order.status) || order.status === "sent";
}

export function createOrders({ openBody, historyBody, message, onChange }) {
  let orders = []; // newest first
  let listRoute = true; // false once the gateway said it has no list route
  let timer = null;
  const ended = new Map(); // id → order that can no longer change (fallback mode)
  const expanded = new Set(); // ids whose details are open
  const amending = new Map(); // id → its amend form
  const drawn = new Map(); // id → {json, tr}

  const storeKey = () => `tradinglab.orders.${state.get("user")?.username ?? "-"}`;
  const knownIds = () => JSON.parse(localStorage.getItem(storeKey()) ?? "[]");
  function remember(id) {
    const ids = [id, ...knownIds().filter((x) => x !== id)].slice(0, LIMIT);
    localStorage.setItem(storeKey(), JSON.stringify(ids));
  }

  async function fetchList() {
    if (listRoute) {
      try {
        return (await api("GET", `/api/v1/orders?status=all&limit=${LIMIT}`)).orders;
      } catch (e) {
        if (!(isMissingRoute(e) || (e instanceof ApiError && e.status === 400 && /status/.test(e.message)))) throw e;
        listRoute = false;
        console.info("orders: no list route on this gateway; reading known orders one by one");
      }
    }
    const list = await Promise.all(
      knownIds().map(async (id) => {
        if (ended.has(id)) return ended.get(id);
        try {
          const o = await api("GET", `/api/v1/orders/${id}`);
          if (!isOpen(o)) ended.set(id, o);
          return o;
        } catch (e) {
          const pending = orders.find((o) => o.order_id === id);
          return e instanceof ApiError && e.status === 404 && pending ? pending : null;
        }
      }),
    );
    return list.filter(Boolean);
  }

  async function refresh() {
    timer = null;
    if (!state.get("user")) {
      orders = [];
      draw();
      return;
    }
    try {
      orders = await fetchList();
      draw();
    } catch (e) {
      say(message, `Could not read your orders: ${explain(e)}`, "error");
    }
  }

  function schedule(ms = 150) {
    if (timer === null) timer = setTimeout(refresh, ms);
  }

  async function cancel(order, button) {
    button.disabled = true;
    try {
      session.needWriteToken();
      await api("DELETE", `/api/v1/orders/${order.order_id}`);
      say(message, `Cancel of order ${order.order_id} sent.`, "ok");
      schedule(300);
    } catch (e) {
      say(message, `Cancel refused: ${explain(e)}`, "error");
      button.disabled = false;
    }
  }

  function amendForm(order) {
    const id = order.order_id;
    const form = h(
      "form",
      { class: "amend", "aria-label": `Amend order ${id}` },
      h("label", {}, "New price", h("input", { name: "price", inputmode: "decimal", autocomplete: "off", size: 8, value: order.price ?? "" })),
      h("label", {}, "New qty", h("input", { name: "qty", inputmode: "decimal", autocomplete: "off", size: 6, value: openQty(order) })),
      h("button", { type: "submit" }, "Send amend"),
      h("button", { type: "button", class: "quiet", onclick: () => close() }, "Close"),
    );
    function close() {
      amending.delete(id);
      drawn.delete(id);
      draw();
    }
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = {};
      const current = orders.find((o) => o.order_id === id) ?? order;
      const price = form.elements.price.value.trim();
      const qty = form.elements.qty.value.trim();
      if (price && price !== current.price) body.price = price;
      if (qty && qty !== openQty(current)) body.qty = qty;
      if (!Object.keys(body).length) {
        say(message, "Change the price or the quantity first.", "error");
        return;
      }
      try {
        session.needWriteToken();
        const answer = await api("PATCH", `/api/v1/orders/${id}`, body);
        say(message, `Amend of order ${id} sent (${answer.status ?? "requested"}).`, "ok");
        close();
        schedule(300);
      } catch (err) {
        say(message, `Amend refused: ${isMissingRoute(err) ? "this exchange cannot amend orders yet" : explain(err)}`, "error");
      }
    });
    return form;
  }

  function detailsCell(o) {
    const details = h(
      "details",
      { ontoggle: (e) => (e.target.open ? expanded.add(o.order_id) : expanded.delete(o.order_id)) },
      h("summary", {}, "Details"),
      waterfall(o.hops),
      fillsList(o),
    );
    details.open = expanded.has(o.order_id);
    return h("td", { class: "details" }, details);
  }

  function row(o, open) {
    const tr = h(
      "tr",
      { class: o.side, dataset: { orderId: o.order_id, status: o.status, clientOrderId: o.client_order_id ?? "" } },
      h("td", {}, clock(o.hops?.gateway_ns)),
      h("td", {}, o.symbol),
      h("td", { class: "side" }, o.side),
      h("td", {}, `${o.type ?? ""} ${o.time_in_force ?? ""}${o.post_only ? " post" : ""}`),
      h("td", { class: "num" }, o.price ?? "market"),
      h("td", { class: "num" }, open ? openQty(o) : o.qty),
      h("td", { class: "num" }, o.filled_qty ?? "0"),
      h("td", { class: "status" }, statusText(o)),
    );
    if (open) {
      const actions = h("td", { class: "actions" });
      if (o.status !== "sent") {
        actions.append(
          h("button", { type: "button", "aria-label": `Amend order ${o.order_id}`, onclick: () => startAmend(o) }, "Amend"),
          h("button", { type: "button", class: "danger", "aria-label": `Cancel order ${o.order_id}`, onclick: (e) => cancel(o, e.currentTarget) }, "Cancel"),
        );
      }
      if (amending.has(o.order_id)) actions.append(amending.get(o.order_id));
      tr.append(actions);
    }
    tr.append(detailsCell(o));
    return tr;
  }

  function startAmend(o) {
    if (!amending.has(o.order_id)) amending.set(o.order_id, amendForm(o));
    drawn.delete(o.order_id);
    draw();
    amending.get(o.order_id).elements.price.focus();
  }

  function fill(body, list, open, emptyText) {
    const trs = list.map((o) => {
      const json = JSON.stringify(o) + amending.has(o.order_id);
      const was = drawn.get(o.order_id);
      if (was && was.json === json && was.open === open) return was.tr;
      // A row opened a moment ago whose toggle event has not run yet stays open when redrawn.
      if (was?.tr.querySelector("details")?.open) expanded.add(o.order_id);
      const tr = row(o, open);
      drawn.set(o.order_id, { json, tr, open });
      return tr;
    });
    if (!trs.length) trs.push(h("tr", { class: "empty" }, h("td", { colspan: 10 }, emptyText)));
    const same = trs.length === body.rows.length && trs.every((tr, i) => body.rows[i] === tr);
    if (!same) body.replaceChildren(...trs);
  }

  function draw() {
    const signedIn = Boolean(state.get("user"));
    const open = orders.filter(isOpen);
    fill(openBody, open, true, signedIn ? "No open orders." : "Log in to see your orders.");
    fill(historyBody, orders.filter((o) => !isOpen(o)), false, signedIn ? "No finished orders yet." : "");
    onChange?.(orders);
  }

  state.on("user", () => {
    orders = [];
    ended.clear();
    drawn.clear();
    amending.clear();
    listRoute = true;
    draw();
    schedule(0);
  });
  setInterval(() => state.get("user") && schedule(0), 10_000);

  return {
    /** An order just accepted (202): shown at once, read back soon. */
    placed(order) {
      remember(order.order_id);
      if (!orders.some((o) => o.order_id === order.order_id)) {
        orders = [{ ...order, status: "sent", filled_qty: "0", fills: [], hops: {} }, ...orders];
        draw();
      }
      schedule(250);
      // Read again a little later: the first read may come before the matcher wrote the order.
      setTimeout(() => schedule(0), 1500);
    },
    /** An event on the private channel. */
    event(frame) {
      if (frame.order_id) remember(frame.order_id);
      ended.delete(frame.order_id);
      schedule();
      setTimeout(() => schedule(0), 1500);
    },
    refresh: () => schedule(0),
    list: () => orders,
  };
}

function openQty(o) {
  if (o.open_qty != null) return o.open_qty;
  return o.qty ? addSteps(o.qty, o.filled_qty ?? "0", -1) : "";
}

function statusText(o) {
  const words = { sent: "sent", partially_filled: "partially filled" };
  const parts = [words[o.status] ?? o.status ?? "?"];
  if (o.reject_reason) parts.push(`— ${o.reject_reason.replaceAll("_", " ")}`);
  if (o.last_request_rejected) {
    const why = typeof o.last_request_rejected === "string" ? o.last_request_rejected : JSON.stringify(o.last_request_rejected);
    parts.push(`(last change refused: ${why.replaceAll("_", " ")})`);
  }
  return parts.join(" ");
}

function fillsList(o) {
  const fills = o.fills ?? [];
  if (!fills.length) return h("p", { class: "fills muted" }, "No fills.");
  return h(
    "ul",
    { class: "fills", "aria-label": `Fills of order ${o.order_id}` },
    fills.map((f) => h("li", {}, `${f.qty} @ ${f.price} · ${clock(f.ts)} · trade ${f.trade_id}`)),
  );
}
