// The depth ladder: asks above (best at the bottom), bids below (best at the top), a bar per level
// sized by its quantity; each level is a button that puts its price into the ticket.

import { h } from "./dom.js";

const DEPTH = 10;

export function createLadder(root, { onPick }) {
  let pending = null;
  let mine = new Set(); // prices where I have an open order, "side:price"

  function level(side, price, qty, widest) {
    const bar = h("span", { class: "bar", "aria-hidden": "true" });
    bar.style.width = `${Math.max(2, (Number(qty) / widest) * 100)}%`;
    const own = mine.has(`${side}:${price}`);
    return h(
      "li",
      { class: `level ${side}${own ? " own" : ""}`, dataset: { price, qty, side } },
      h(
        "button",
        {
          type: "button",
          "aria-label": `${side === "sell" ? "Ask" : "Bid"} ${price}, quantity ${qty}${own ? ", includes your order" : ""}: use this price`,
          onclick: () => onPick(price, side),
        },
        bar,
        h("span", { class: "price" }, price),
        h("span", { class: "qty" }, qty),
      ),
    );
  }

  function draw(book) {
    pending = null;
    const byPrice = (a, b) => Number(a[0]) - Number(b[0]);
    const asks = [...book.asks].sort(byPrice).slice(0, DEPTH).reverse();
    const bids = [...book.bids].sort(byPrice).reverse().slice(0, DEPTH);
    const widest = Math.max(1, ...[...asks, ...bids].map(([, q]) => Number(q)));
    const bestAsk = asks.at(-1)?.[0];
    const bestBid = bids[0]?.[0];
    const spread =
      bestAsk && bestBid ? `spread ${(Number(bestAsk) - Number(bestBid)).toFixed(decimals(bestAsk, bestBid))}` : "one-sided or empty book";
    root.replaceChildren(
      h("ol", { class: "side asks", "aria-label": "Asks (sell orders)" }, asks.map(([p, q]) => level("sell", p, q, widest))),
      h("p", { class: "spread" }, spread, h("span", { class: "seq" }, ` · seq ${book.sequence}`)),
      h("ol", { class: "side bids", "aria-label": "Bids (buy orders)" }, bids.map(([p, q]) => level("buy", p, q, widest))),
    );
    root.dataset.sequence = book.sequence;
  }

  return {
    /** Draws at most once a frame, whatever the update rate. */
    show(book) {
      if (pending === null) pending = requestAnimationFrame(() => draw(book));
    },
    clear(text) {
      root.replaceChildren(h("p", { class: "empty" }, text));
      delete root.dataset.sequence;
    },
    /** My open orders, to mark their levels. */
    markMine(orders) {
      mine = new Set(orders.map((o) => `${o.side}:${o.price}`));
    },
  };
}

function decimals(...prices) {
  return Math.max(...prices.map((p) => (p.split(".")[1] ?? "").length));
}
