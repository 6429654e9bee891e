// The little shared state the panels read: who is signed in, the symbols, the symbol on screen,
// the connection. `set` tells the key's listeners; `on(key, fn)` calls fn now and on each change.

const values = new Map();
const listeners = new Map();

export function get(key) {
  return values.get(key);
}

export function set(key, value) {
  values.set(key, value);
  for (const fn of listeners.get(key) ?? []) fn(value);
}

export function on(key, fn) {
  if (!listeners.has(key)) listeners.set(key, new Set());
  listeners.get(key).add(fn);
  if (values.has(key)) fn(values.get(key));
  return () => listeners.get(key).delete(fn);
}
