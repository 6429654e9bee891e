// Decimals and times. Prices and quantities stay strings end to end (the API's own form); rules
// are checked on exact integers (BigInt at a common scale), never through floating point. Numbers
// are used only to draw (bar widths, the chart).

const DECIMAL = /^\d+(\.\d+)?$/;

/** "100.05" → {units: 10005n, scale: 2}; null unless a plain non-negative decimal. */
export function parseDecimal(text) {
  const t = String(text ?? "").trim();
  if (!DECIMAL.test(t)) return null;
  const [whole, frac = ""] = t.split(".");
  return { units: BigInt(whole + frac), scale: frac.length };
}

function atScale(d, scale) {
  return d.units * 10n ** BigInt(scale - d.scale);
}

/** True if decimal string `value` is a whole multiple of `step` (both valid decimals). */
export function isMultiple(value, step) {
  const v = parseDecimal(value);
  const s = parseDecimal(step);
  if (!v || !s || s.units === 0n) return false;
  const scale = Math.max(v.scale, s.scale);
  return atScale(v, scale) % atScale(s, scale) === 0n;
}

/** True if `value` is a decimal above zero. */
export function isPositive(value) {
  const v = parseDecimal(value);
  return v !== null && v.units > 0n;
}

/** `value` moved by `n` steps (n may be negative), at the step's decimals: ("100.00", "0.01", 3) → "100.03". */
export function addSteps(value, step, n) {
  const v = parseDecimal(value);
  const s = parseDecimal(step);
  if (!v || !s) return value;
  const scale = Math.max(v.scale, s.scale);
  const units = atScale(v, scale) + atScale(s, scale) * BigInt(n);
  if (units < 0n) return value;
  const digits = units.toString().padStart(scale + 1, "0");
  return scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
}

/** How many decimals a tick has: "0.05" → 2, "0.5" → 1, "1" → 0. */
export function decimalsOf(step) {
  return parseDecimal(step)?.scale ?? 0;
}

/** Nanoseconds since the epoch (number or string) → local "HH:MM:SS.mmm". */
export function clock(ns) {
  const ms = Number(ns) / 1e6;
  if (!Number.isFinite(ms) || ms <= 0) return "—";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** A duration in ns → "2.41 ms", "310 µs", "870 ns". Hops come as JSON numbers past 2^53, so
 *  a hop is only good to ~0.25 µs: µs is the finest unit shown below a millisecond. */
export function duration(ns) {
  if (!Number.isFinite(ns) || ns < 0) return "—";
  if (ns >= 1e9) return `${(ns / 1e9).toFixed(2)} s`;
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(ns >= 1e7 ? 1 : 2)} ms`;
  if (ns >= 1e3) return `${Math.round(ns / 1e3)} µs`;
  return `${Math.round(ns)} ns`;
}

/** A fresh client order id: "ui-" and 12 base-36 characters (unique enough per account and symbol). */
export function clientOrderId() {
  const rand = crypto.getRandomValues(new Uint32Array(2));
  return `ui-${Date.now().toString(36)}${rand[0].toString(36).slice(0, 4)}`;
}
