// Building the page's UI from data without ever parsing data as markup: every piece of text goes in
// as a text node. Names from the gallery, error messages from a server and settings from a link are
// data; the page never gives them to any API that parses HTML from a string.

/**
 * el("p", { class: "where", data: { testid: "where" } }, "ran on ", name) → <p class="where"
 * data-testid="where">ran on …</p>. Children: strings and numbers become text nodes, nodes are
 * appended, null/undefined/false are skipped, arrays are flattened.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "data") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) throw new Error(`el(): set ${k} with addEventListener, not as an attribute`);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace everything inside ``node`` with ``children`` (same rules as el()). */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}
