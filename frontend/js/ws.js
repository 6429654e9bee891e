// The WebSocket session (gateway/WEBSOCKET.md): one connection to /ws carrying the channels the
// page wants; reconnects by itself with exponential backoff and jitter; keeps each subscribed book
// in sync by its sequence numbers (a gap → unsubscribe + subscribe for a fresh snapshot) and
// notices gaps in trades. The connection's state goes to state "conn" for the status badge:
//   connecting | live | disconnected (with the seconds to the next try) | resyncing.
//
// Events (feed.on(type, fn)): "book" (symbol, book), "trade" (frame), "order" (frame),
// "trades-reset" (symbol: reload trades over REST — a gap, or a new subscription after time
// away), "orders-reset" (reload my orders), "welcome" (frame).

import * as state from "./state.js";

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15_000;
/** A silent connection is dead after this many heartbeats missed. */
const MISSED_HEARTBEATS = 3;

/** A book as the ladder draws it: price → qty per side, and its sequence. */
class Book {
  constructor(symbol) {
    this.symbol = symbol;
    this.sequence = null; // null: waiting for a snapshot
    this.bids = new Map();
    this.asks = new Map();
  }

  load(frame) {
    this.sequence = frame.sequence;
    this.bids = new Map(frame.bids);
    this.asks = new Map(frame.asks);
  }

  /** Applies an update; false on a gap (the book must be fetched again). */
  apply(frame) {
    if (this.sequence === null || frame.sequence <= this.sequence) return true;
    if (frame.prev_sequence !== this.sequence) return false;
    for (const [side, price, qty] of frame.changes) {
      const levels = side === "buy" ? this.bids : this.asks;
      if (qty === "0" || Number(qty) === 0) levels.delete(price);
      else levels.set(price, qty);
    }
    this.sequence = frame.sequence;
    return true;
  }
}

export class Feed {
  constructor(path = "/ws") {
    this.url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
    this.wanted = new Set();
    this.books = new Map(); // channel → Book
    this.lastTrade = new Map(); // symbol → sequence of the last trade seen
    this.handlers = new Map();
    this.socket = null;
    this.attempt = 0;
    this.everLive = false;
    this.timers = { retry: null, tick: null, watchdog: null };
    this.heartbeatMs = 5000;
    this.instance = null;
    this.account = null;
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
  }

  emit(type, ...args) {
    for (const fn of this.handlers.get(type) ?? []) {
      try {
        fn(...args);
      } catch (e) {
        console.error(`feed ${type} handler:`, e);
      }
    }
  }

  start() {
    this.connect();
  }

  /** Drops the connection and opens a new one now (after a login or logout: the upgrade carries
   *  the session cookie, which decides the private channel). */
  restart() {
    this.attempt = 0;
    this.teardown();
    this.connect();
  }

  subscribe(channel) {
    if (this.wanted.has(channel)) return;
    this.wanted.add(channel);
    if (channel === "orders" && !this.account) return; // sent after a welcome that names an account
    this.prepare(channel);
    this.send({ op: "subscribe", channel });
    this.settle();
  }

  unsubscribe(channel) {
    if (!this.wanted.delete(channel)) return;
    this.books.delete(channel);
    this.send({ op: "unsubscribe", channel });
  }

  prepare(channel) {
    if (channel.startsWith("book:")) this.books.set(channel, new Book(channel.slice(5)));
    if (channel.startsWith("trades:")) this.lastTrade.delete(channel.slice(7));
  }

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  setState(name, extra = {}) {
    state.set("conn", { state: name, instance: this.instance, ...extra });
  }

  connect() {
    this.setState("connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onmessage = (m) => {
      if (socket !== this.socket) return;
      this.armWatchdog();
      let frame;
      try {
        frame = JSON.parse(m.data);
      } catch {
        return;
      }
      this.handle(frame);
    };
    socket.onclose = () => {
      if (socket === this.socket) this.lost();
    };
  }

  teardown() {
    clearTimeout(this.timers.retry);
    clearInterval(this.timers.tick);
    clearTimeout(this.timers.watchdog);
    if (this.socket) {
      const old = this.socket;
      this.socket = null;
      old.onclose = null;
      old.onmessage = null;
      old.close();
    }
  }

  armWatchdog() {
    clearTimeout(this.timers.watchdog);
    this.timers.watchdog = setTimeout(() => {
      console.warn("feed: no frame for", MISSED_HEARTBEATS, "heartbeats; reconnecting");
      this.socket?.close();
      this.lost();
    }, this.heartbeatMs * MISSED_HEARTBEATS);
  }

  /** The connection is gone: wait (doubling, with jitter), then connect again. */
  lost() {
    this.teardown();
    this.instance = null;
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = cap / 2 + Math.random() * (cap / 2);
    this.attempt += 1;
    const due = Date.now() + delay;
    const show = () => {
      const secs = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      this.setState("disconnected", { retryIn: secs });
    };
    show();
    this.timers.tick = setInterval(show, 250);
    this.timers.retry = setTimeout(() => {
      clearInterval(this.timers.tick);
      this.connect();
    }, delay);
  }

  /** Live once every wanted book has its snapshot; until then resyncing (or connecting, the
   *  first time). */
  settle() {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN || this.instance === null) return;
    const waiting = [...this.books.values()].filter((b) => b.sequence === null).map((b) => b.symbol);
    if (waiting.length === 0) {
      this.everLive = true;
      this.setState("live");
    } else {
      this.setState(this.everLive ? "resyncing" : "connecting", { waiting });
    }
  }

  handle(frame) {
    switch (frame.type) {
      case "welcome":
        this.attempt = 0;
        this.instance = frame.instance;
        this.account = frame.account;
        this.heartbeatMs = (frame.heartbeat_secs || 5) * 1000;
        this.armWatchdog();
        for (const channel of this.wanted) {
          if (channel === "orders" && !frame.account) continue;
          this.prepare(channel);
          this.send({ op: "subscribe", channel });
        }
        this.emit("welcome", frame);
        this.settle();
        break;
      case "subscribed":
        if (frame.channel.startsWith("trades:")) this.emit("trades-reset", frame.channel.slice(7));
        if (frame.channel === "orders") this.emit("orders-reset");
        break;
      case "snapshot": {
        const book = this.books.get(frame.channel);
        if (!book) break;
        book.load(frame);
        this.emit("book", book.symbol, book);
        this.settle();
        break;
      }
      case "update": {
        const book = this.books.get(frame.channel);
        if (!book) break;
        if (book.apply(frame)) {
          if (book.sequence === frame.sequence) this.emit("book", book.symbol, book);
        } else {
          console.warn(`feed: gap in ${frame.channel} (have ${book.sequence}, update follows ${frame.prev_sequence}); resubscribing`);
          this.resync(frame.channel);
        }
        break;
      }
      case "trade": {
        const last = this.lastTrade.get(frame.symbol);
        this.lastTrade.set(frame.symbol, frame.sequence);
        this.emit("trade", frame);
        if (last != null && frame.prev_sequence != null && frame.prev_sequence !== last) {
          this.emit("trades-reset", frame.symbol);
        }
        break;
      }
      case "order":
        this.emit("order", frame);
        break;
      case "overflow":
        // Books come back as snapshots by themselves; trades and order events are read again.
        for (const channel of frame.channels ?? []) {
          if (channel.startsWith("trades:")) this.emit("trades-reset", channel.slice(7));
          if (channel === "orders") this.emit("orders-reset");
        }
        break;
      case "error":
        if (frame.code !== "already_subscribed") console.warn("feed error:", frame.code, frame.message);
        break;
      default:
        break; // heartbeat, pong, status, unsubscribed
    }
  }

  /** A gap: drop the book and ask for a fresh snapshot. */
  resync(channel) {
    this.prepare(channel);
    this.send({ op: "unsubscribe", channel });
    this.send({ op: "subscribe", channel });
    this.settle();
  }
}
