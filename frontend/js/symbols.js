// The symbols (`GET /api/v1/symbols`: tick, lot, band, reference, and `halted` where the gateway
// reports it), read at start and every few seconds after, into state "symbols".

import { api } from "./api.js";
import * as state from "./state.js";

const EVERY_MS = 5000;

export async function loadSymbols() {
  const { symbols } = await api("GET", "/api/v1/symbols");
  const before = JSON.stringify(state.get("symbols"));
  if (JSON.stringify(symbols) !== before) state.set("symbols", symbols);
  return symbols;
}

/** Loads now, then keeps them fresh; failures are logged and retried on the next round. */
export async function watchSymbols() {
  const again = () => setTimeout(() => loadSymbols().catch((e) => console.warn("symbols:", e.message)).finally(again), EVERY_MS);
  try {
    await loadSymbols();
  } finally {
    again();
  }
}
