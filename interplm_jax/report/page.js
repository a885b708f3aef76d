// The page: layer summary, feature map, feature list, search, navigation (deep links, back and
// forward, random feature), and start-up. Runs after util.js, viewer.js, concept_view.js,
// feature.js and bench_view.js, in the same scope.
let L = null, sel = null, mode = null, concept = null, points = [];

const HEADERS = {l0: "L0", fve: "FVE", dead: "dead", select_f1: "selection F1", lr: "lr", l1: "l1",
  kind: "kind", name: "name", mean_test_f1: "mean test F1", n_concepts_test: "concepts F1 > top",
  n_pairs_valid: "pairs (valid)", n_pairs_test: "pairs kept (test)"};
function liveIndex() {  // feature id -> index among live features
  if (!L._live) { L._live = new Map(); L.features.ids.forEach((f, i) => L._live.set(f, i)); }
  return L._live;
}

function showLayer(layer) {
  L = D.layers.find((x) => x.layer === layer);
  L._live = null;
  $("layer").value = String(layer);
  const g = L.grid, live = L.features.ids.length;
  $("layerinfo").replaceChildren(
    el("h2", {text: `Layer ${L.layer}: SAE ${L.sae}`}),
    el("div", {class: "stats"},
      el("span", {}, el("b", {text: String(L.n_features)}), " features"),
      el("span", {}, el("b", {text: String(live)}), ` live on ${L.features.n_proteins} proteins`),
      el("span", {}, el("b", {text: L.arch}), L.normalized ? " (normalized)" : " (raw scale)"),
      ...(L.activations ? [el("span", {title: "activation statistics of the layer (the store's): " +
          "||mean|| / mean token norm near 1 means every token is mostly the common mean; outlier " +
          "dimensions have a variance or max |value| far above the others'"},
        "activations: ||mean|| / mean token norm ", el("b", {text: fmt(L.activations.mean_norm_ratio)}),
        `, token norm ${fmt(L.activations.norm_mean)} (max ${fmt(L.activations.norm_max)}), `,
        L.activations.outliers.length ? `outlier dimensions ${L.activations.outliers.slice(0, 8).join(", ")}` +
          (L.activations.outliers.length > 8 ? " ..." : "") : "no outlier dimensions")] : [])),
    el("h3", {text: "The grid: final metrics and concept selection score (chosen SAE highlighted)"}),
    el("div", {id: "grid"}, table(g.columns.map((c) => HEADERS[c] || c), g.rows, (r) => r[0] === g.chosen ? "chosen" : "")),
    el("div", {class: "legend", text: Object.entries(g.fixed || {}).map(([k, v]) => `${k} ${fmt(v)} \u00b7 `).join("")}),
    help("Every SAE trained on this layer. L0: features active per residue on average; FVE: fraction of the " +
      "activations' variance the SAE reconstructs; dead: share of features that never fire; selection F1: " +
      "the mean over concepts of the best F1 any of its features reaches on the selection proteins, the " +
      "score that chose the highlighted SAE."),
    ...(L.baselines ? [
      el("h3", {text: "Held-out concept evaluation (test split): the chosen SAE beside the baselines"}),
      el("div", {id: "baselines"}, table(L.baselines.columns.map((c) => HEADERS[c] || c),
        L.baselines.rows.map((r) => [kindName(r[0], true), ...r.slice(1)]), (r) => r[0] === "SAE" ? "chosen" : "")),
      help("Mean test F1: per concept, the feature chosen on the validation proteins, scored on the test " +
        "proteins. Pairs: (feature, concept) with validation F1 above the report's threshold, and how many " +
        `keep it on test. Baselines: single ${D.model_family} neurons, and SAEs trained the same way on ` +
        `${D.model_family} with shuffled weights and on a randomly initialised ${D.model_family}.`)] : []));
  $("count").textContent = `(${live} live)`;
  sel = null; mode = null; V.row = null;
  $("feature").replaceChildren(el("p", {class: "empty", text: "Choose a feature in the list, on the map, or search; or open the concept view."}));
  drawUmap();
  listFeatures();
}

function listFeatures() {
  const q = $("search").value.trim().toLowerCase();
  const ul = $("features"), ids = L.features.ids, items = [];
  if (!q) {
    ids.forEach((f) => items.push([f, bestLabel(f)]));
  } else if (/^#?\d+$/.test(q)) {
    const n = q.replace("#", "");
    ids.filter((f) => String(f).startsWith(n)).forEach((f) => items.push([f, bestLabel(f)]));
  } else {
    const hits = [];
    for (const f of ids) {
      for (const c of concepts(f)) {
        const name = L.concepts.names[c[0]];
        if (name.toLowerCase().includes(q) || niceConcept(name).toLowerCase().includes(q)) {
          hits.push([f, `${niceConcept(name)} (F1 ${fmt(c[1], 2)})`, c[1]]); break;
        }
      }
      if (!hits.length || hits[hits.length - 1][0] !== f) {
        const d = L.descriptions && L.descriptions[String(f)];
        if (d && (d.summary + " " + d.description).toLowerCase().includes(q)) hits.push([f, d.summary, -1]);
      }
    }
    hits.sort((a, b) => b[2] - a[2]).forEach((h) => items.push([h[0], h[1]]));
  }
  const MAX = 20000;
  ul.replaceChildren(...items.slice(0, MAX).map(([f, label]) => {
    const i = liveIndex().get(f);
    const li = el("li", {"data-feature": String(f), class: f === sel ? "sel" : ""},
      el("span", {class: "fid", text: `#${f}`}), el("span", {class: "fc", text: label || "no concept"}),
      el("span", {class: "fm", text: `${fmt(100 * L.features.freq[i], 1)}% of proteins`}));
    li.addEventListener("click", () => showFeature(f));
    return li;
  }));
  if (!items.length) ul.append(el("li", {class: "empty", text: "no feature matches"}));
  if (items.length > MAX) ul.append(el("li", {class: "empty", text: `\u2026 ${items.length - MAX} more: refine the search`}));
  ul.scrollTop = 0;
  $("count").textContent = q ? `(${items.length} of ${ids.length} live)` : `(${ids.length} live)`;
}

const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
  "#ff9da7", "#9c755f", "#86bcb6", "#d37295", "#8cd17d", "#499894", "#f1ce63", "#a0cbe8", "#ffbe7d"];
const clusterColour = (c) => (c === null || c < 0) ? "#b8bec7" : PALETTE[c % PALETTE.length];
function drawUmap() {
  const cv = $("umap"), ctx = cv.getContext("2d"), r = window.devicePixelRatio || 1;
  cv.style.height = L.umap ? "" : "60px";
  const w = cv.clientWidth, h = cv.clientHeight;
  cv.width = w * r; cv.height = h * r; ctx.setTransform(r, 0, 0, r, 0, 0);
  ctx.clearRect(0, 0, w, h);
  points = [];
  if (!L.umap) {
    $("umapnote").textContent = "(not computed for this layer)";
    ctx.fillStyle = "#98a2b3"; ctx.font = "13px system-ui"; ctx.textAlign = "center";
    ctx.fillText("No UMAP for this layer (scripts/analyze.py umap)", w / 2, h / 2);
    return;
  }
  const U = L.umap, pad = 14, live = liveIndex();
  const xs = U.x.filter((v) => v !== null), ys = U.y.filter((v) => v !== null);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (w - 2 * pad) / ((x1 - x0) || 1), sy = (h - 2 * pad) / ((y1 - y0) || 1);
  const clusters = new Set();
  for (let f = 0; f < U.x.length; f++) {
    if (U.x[f] === null) continue;
    points.push({f, x: pad + (U.x[f] - x0) * sx, y: h - pad - (U.y[f] - y0) * sy, live: live.has(f)});
    if (U.cluster[f] >= 0) clusters.add(U.cluster[f]);
  }
  $("umapnote").textContent = `(${points.length} features, ${clusters.size} clusters)`;
  for (const p of points) {
    ctx.globalAlpha = p.live ? 0.85 : 0.25;
    ctx.fillStyle = clusterColour(U.cluster[p.f]);
    ctx.beginPath(); ctx.arc(p.x, p.y, p.live ? 3.2 : 2, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.globalAlpha = 1;
  const s = points.find((p) => p.f === sel);
  if (s) {
    ctx.strokeStyle = "#111"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(s.x, s.y, 7, 0, 2 * Math.PI); ctx.stroke();
  }
}
function nearest(ev) {
  const b = $("umap").getBoundingClientRect(), x = ev.clientX - b.left, y = ev.clientY - b.top;
  let best = null, bd = 64;  // within 8 px
  for (const p of points) {
    const d = (p.x - x) ** 2 + (p.y - y) ** 2;
    if (d < bd) { bd = d; best = p; }
  }
  return best;
}

// ---- navigation: the view is in the address (#layer=4&feature=5, #layer=4&concept=NAME)
function stateHash() {
  const s = new URLSearchParams({layer: String(L.layer)});
  if (mode === "feature" && sel !== null) {
    s.set("feature", String(sel));
    if (V.row !== null && $("viewer3d")) s.set("protein", P.id[V.row]);
  } else if (mode === "concept" && concept) s.set("concept", concept);
  else if (mode === "bench") s.set("bench", String(benchLayer));
  return "#" + s.toString();
}
function pushState() {
  const h = stateHash();
  if (h !== location.hash) history.pushState(null, "", h);
}
function applyHash() {
  const s = new URLSearchParams(location.hash.slice(1));
  const layer = s.has("layer") ? Number(s.get("layer")) : D.layers[D.layers.length - 1].layer;
  if (D.layers.some((x) => x.layer === layer) && (!L || L.layer !== layer || !["feature", "concept", "bench"].some((k) => s.has(k)))) showLayer(layer);
  if (s.has("feature")) {
    const row = P.id.indexOf(s.get("protein") || "");
    showFeature(Number(s.get("feature")), false, row >= 0 ? row : undefined);
  } else if (s.has("concept")) showConcept(s.get("concept"), false);
  else if (s.has("bench")) showBench(Number(s.get("bench")), false);
}
function randomFeature() {
  const ids = L.features.ids;
  showFeature(ids[Math.floor(Math.random() * ids.length)]);
}

async function start() {
  D = JSON.parse(await inflate("data"));
  P = D.proteins;
  const selLayer = $("layer");
  for (const x of D.layers) selLayer.append(el("option", {value: String(x.layer), text: `${x.layer}`}));
  selLayer.addEventListener("change", () => {
    const bench = mode === "bench";
    showLayer(Number(selLayer.value));
    if (bench) showBench(L.layer, false);
    pushState();
  });
  $("search").addEventListener("input", listFeatures);
  $("random").addEventListener("click", randomFeature);
  $("conceptview").addEventListener("click", () => showConcept(concept || (sel !== null && concepts(sel)[0] ? L.concepts.names[concepts(sel)[0][0]] : null)));
  $("benchview").addEventListener("click", () => showBench(L.layer));
  if (D.bench && D.bench.warnings.length) $("benchview").textContent += ` (${D.bench.warnings.length} warning${D.bench.warnings.length > 1 ? "s" : ""})`;
  $("umap").addEventListener("click", (ev) => { const p = nearest(ev); if (p) showFeature(p.f); });
  $("umap").addEventListener("mousemove", (ev) => {
    const p = nearest(ev);
    $("umap").title = p ? `#${p.f}${p.live ? "" : " (dead)"} cluster ${L.umap.cluster[p.f]}  ${bestLabel(p.f)}` : "";
  });
  window.addEventListener("resize", () => drawUmap());
  window.addEventListener("popstate", applyHash);
  $("meta").textContent = [D.model, `${D.n_store_proteins} proteins`, D.created && `built ${D.created}`].filter(Boolean).join(" \u00b7 ");
  showLayer(D.layers[D.layers.length - 1].layer);
  if (location.hash.length > 1) applyHash();
  // for tests and scripting
  window.featureBrowser = {showLayer, showFeature, showConcept, showBench, data: D, viewerColours, viewerSticks,
    point: (f) => { const p = points.find((q) => q.f === f); return p ? [p.x, p.y] : null; },
    structureShown: () => (V.viewer && $("viewer3d") && $("viewer3d").dataset.row !== undefined ? P.id[V.row] : null)};
  document.body.dataset.ready = "1";
}
let D = null, P = null;
start().catch((e) => {
  document.body.prepend(el("pre", {class: "fatal", text: `The page could not start: ${e}`}));
  throw e;
});
