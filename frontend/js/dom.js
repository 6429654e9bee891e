// Building DOM nodes without innerHTML (no markup injection from exchange data) and without style
// attributes (the CSP's style-src 'self' refuses them; styles set from JS through el.style are
// fine).

/** `h("button", {class: "x", onclick: f}, "Label")`: an element with properties and children. */
export function h(tag, props = {}, ...children) {
  return fill(document.createElement(tag), props, children);
}

const SVG = "http://www.w3.org/2000/svg";

/** The same for SVG elements (attributes only). */
export function s(tag, props = {}, ...children) {
  return fill(document.createElementNS(SVG, tag), props, children);
}

function fill(el, props, children) {
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "style") throw new Error("no style attributes under the CSP: use a class");
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** `document.getElementById`, failing loudly when the page lacks the element. */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

/** Shows a message in a status/alert element; `kind` is "error", "ok" or "" (neutral). */
export function say(el, text, kind = "") {
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = !text;
}
