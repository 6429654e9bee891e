// Candles built from trades with TradingView's lightweight-charts (vendor/, copied from npm by
// `npm run build`; it defines the global LightweightCharts). A bar per interval: open, high, low,
// close of the trades in it, and their volume underneath. The container's data-bars says how many
// bars are drawn (the browser test reads it). The library's own logo injects a <style> element,
// which the CSP refuses: it is off, and the page credits TradingView in text under the chart.

import { decimalsOf } from "./format.js";

const MAX_TRADES = 5000;
/** The chart draws UTC; bars are shifted so the axis reads local time. */
const LOCAL_SHIFT_S = -new Date().getTimezoneOffset() * 60;

export function createChart(root, { intervalSecs = 60 } = {}) {
  const LW = window.LightweightCharts;
  if (!LW) {
    root.textContent = "The chart library is missing: run `npm ci && npm run build` in frontend/.";
    return { reset() {}, add() {}, setInterval() {}, setSymbol() {}, bars: () => 0 };
  }
  const css = getComputedStyle(document.documentElement);
  const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const up = color("--buy", "#26a69a");
  const down = color("--sell", "#ef5350");
  const chart = LW.createChart(root, {
    autoSize: true,
    layout: { background: { color: color("--panel", "#161d26") }, textColor: color("--muted", "#8b98a8"), attributionLogo: false },
    grid: { vertLines: { color: color("--grid", "#222c38") }, horzLines: { color: color("--grid", "#222c38") } },
    timeScale: { timeVisible: true, secondsVisible: true, borderColor: color("--grid", "#222c38") },
    rightPriceScale: { borderColor: color("--grid", "#222c38") },
    crosshair: { mode: LW.CrosshairMode?.Normal ?? 0 },
  });
  const candles = chart.addSeries(LW.CandlestickSeries, {
    upColor: up,
    downColor: down,
    borderVisible: false,
    wickUpColor: up,
    wickDownColor: down,
  });
  const volume = chart.addSeries(LW.HistogramSeries, { priceScaleId: "volume", priceFormat: { type: "volume" }, lastValueVisible: false, priceLineVisible: false });
  chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });

  let interval = intervalSecs;
  let trades = []; // {id, t (s), price, qty}, oldest first
  const seen = new Set();
  let last = null; // the newest bar

  const bucket = (t) => Math.floor((t + LOCAL_SHIFT_S) / interval) * interval;

  function toTrade(t) {
    return { id: t.trade_id, t: Number(t.ts) / 1e9, price: Number(t.price), qty: Number(t.qty) };
  }

  function redraw() {
    const bars = [];
    for (const tr of trades) {
      const time = bucket(tr.t);
      const bar = bars.at(-1);
      if (bar && bar.time === time) {
        bar.high = Math.max(bar.high, tr.price);
        bar.low = Math.min(bar.low, tr.price);
        bar.close = tr.price;
        bar.volume += tr.qty;
      } else {
        bars.push({ time, open: tr.price, high: tr.price, low: tr.price, close: tr.price, volume: tr.qty });
      }
    }
    candles.setData(bars.map(({ volume: _, ...ohlc }) => ohlc));
    volume.setData(bars.map((b) => ({ time: b.time, value: b.volume, color: b.close >= b.open ? `${up}80` : `${down}80` })));
    last = bars.at(-1) ?? null;
    root.dataset.bars = bars.length;
  }

  return {
    setSymbol(spec) {
      const precision = decimalsOf(spec.tick);
      candles.applyOptions({ priceFormat: { type: "price", precision, minMove: Number(spec.tick) } });
    },
    setInterval(secs) {
      interval = secs;
      redraw();
      chart.timeScale().fitContent();
    },
    /** All trades anew (any order); redraws. */
    reset(list) {
      seen.clear();
      trades = list.map(toTrade).filter((t) => !seen.has(t.id) && seen.add(t.id));
      trades.sort((a, b) => a.t - b.t);
      redraw();
      chart.timeScale().fitContent();
    },
    /** One live trade: updates the last bar, or starts one. */
    add(t) {
      if (seen.has(t.trade_id)) return;
      seen.add(t.trade_id);
      const tr = toTrade(t);
      trades.push(tr);
      if (trades.length > MAX_TRADES) trades.splice(0, trades.length - MAX_TRADES);
      const time = bucket(tr.t);
      if (last && time < last.time) return redraw(); // late: rebuild
      if (last && time === last.time) {
        last = { ...last, high: Math.max(last.high, tr.price), low: Math.min(last.low, tr.price), close: tr.price, volume: last.volume + tr.qty };
      } else {
        last = { time, open: tr.price, high: tr.price, low: tr.price, close: tr.price, volume: tr.qty };
        root.dataset.bars = Number(root.dataset.bars ?? 0) + 1;
      }
      const { volume: v, ...ohlc } = last;
      candles.update(ohlc);
      volume.update({ time, value: v, color: last.close >= last.open ? `${up}80` : `${down}80` });
    },
    bars: () => Number(root.dataset.bars ?? 0),
  };
}
