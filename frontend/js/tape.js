// The trade tape: newest first, the taker's side colouring each print.

import { clock } from "./format.js";
import { h } from "./dom.js";

const ROWS = 50;

export function createTape(body) {
  const seen = new Set();

  function row(t) {
    const side = t.taker_side ?? "";
    return h(
      "tr",
      { class: side, dataset: { tradeId: t.trade_id } },
      h("td", {}, clock(t.ts)),
      h("td", { class: "num" }, t.price),
      h("td", { class: "num" }, t.qty),
      h("td", { title: side ? `the taker ${side === "buy" ? "bought" : "sold"}` : "" }, side),
    );
  }

  return {
    /** Replaces the tape with `trades` (newest first, as the REST API gives them). */
    reset(trades) {
      seen.clear();
      const rows = trades.slice(0, ROWS);
      for (const t of rows) seen.add(t.trade_id);
      body.replaceChildren(...rows.map(row));
    },
    add(t) {
      if (seen.has(t.trade_id)) return;
      seen.add(t.trade_id);
      body.prepend(row(t));
      while (body.rows.length > ROWS) body.lastElementChild.remove();
    },
  };
}
