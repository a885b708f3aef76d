// Helpers shared by the page's scripts: DOM building (text only, never HTML from data),
// number formats, the activation colour scale, decoding of the embedded data.
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
function fmt(v, d) {
  if (v === null || v === undefined) return "\u2013";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : v.toFixed(d === undefined ? 3 : d);
}
// cells: a value, or a DOM node (e.g. a link) shown as is
function table(cols, rows, rowClass) {
  const t = el("table", {}, el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", {text: c})))));
  const b = el("tbody");
  rows.forEach((r, i) => b.append(el("tr", {class: rowClass ? rowClass(r, i) : ""},
    ...r.map((v, j) => v instanceof Node ? el("td", {class: "l"}, v)
      : el("td", {class: typeof v === "string" && j > 0 ? "l" : "", text: fmt(v)})))));
  t.append(b);
  return el("div", {class: "tablewrap"}, t);
}
function help(text) {  // a short note in plain words, folded under a "?"
  return el("details", {class: "help"}, el("summary", {text: "?"}), el("div", {text}));
}
function decode(b64) {
  const s = atob(b64), q = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) q[i] = s.charCodeAt(i);
  return q;
}
// gzip + base64 text of a <script> element -> its text (the browser's own DecompressionStream)
async function inflate(id) {
  const bytes = decode(document.getElementById(id).textContent.trim());
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}
// white -> orange -> red -> dark red, t in [0, 1]; the strips and the 3-D view share it
const STOPS = [[255, 255, 255], [253, 174, 97], [215, 48, 39], [127, 0, 38]];
function heatRGB(t) {
  t = Math.max(0, Math.min(1, t)) * (STOPS.length - 1);
  const i = Math.min(Math.floor(t), STOPS.length - 2), f = t - i, a = STOPS[i], b = STOPS[i + 1];
  return a.map((x, k) => Math.round(x + f * (b[k] - x)));
}
const heat = (t) => `rgb(${heatRGB(t).join(",")})`;
const heatHex = (t) => "#" + heatRGB(t).map((x) => x.toString(16).padStart(2, "0")).join("");
// "Binding site_Zn(2+)" -> "Binding site: Zn(2+)"
const niceConcept = (name) => name.replace("_", ": ");
const uniprotURL = (id) => `https://www.uniprot.org/uniprotkb/${encodeURIComponent(id)}/entry`;
const alphafoldURL = (id) => `https://alphafold.ebi.ac.uk/entry/${encodeURIComponent(id)}`;
function link(href, text) {  // opens in a new tab; the page itself loads nothing
  return el("a", {href, target: "_blank", rel: "noopener noreferrer", text});
}
