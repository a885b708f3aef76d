// The bench view: every SAE of every grid of a layer (bench.csv) as a sortable table with the
// chosen SAE and the controls marked, its Pareto plots (L0 against FVE, loss recovered and
// concepts found; SVG, hover a point for its hyperparameters), the bench's other tables (D.bench
// .tables: the sparse probes, ...) and the small-study warnings. Runs after util.js, before page.js.
const MODEL_COLOURS = ["#2f6fdb", "#e8772e", "#8e44ad", "#2a9d8f", "#c0392b", "#7f8c8d"];
const BENCH_HEADERS = {model: "model", sae: "SAE", arch: "arch", l0: "L0", fve: "FVE", dead_frac: "dead",
  dense_frac: "dense", loss_recovered: "loss recovered", n_concepts: "concepts", mean_best_f1: "best F1 (valid)",
  test_f1: "test F1", chosen: "chosen", probe: "probe", concepts: "concepts", concept: "concept",
  feature: "feature", n_residues: "residues", n_proteins: "proteins", act_mean: "activation",
  delta_zero: "zero: \u0394 log p", z_zero: "zero: z", q_zero: "zero: q", delta_clamp: "clamp: \u0394 log p",
  z_clamp: "clamp: z", q_clamp: "clamp: q", null_size: "null features"};
const PARETO = [["fve", "fraction of variance explained (test)"], ["loss_recovered", "MLM loss recovered (test)"],
  ["n_concepts", "concepts with a feature at valid F1 > 0.5"]];
let benchLayer = null;

// bench.csv's model column: the study's model ("model"; "esm2" in studies made before) or a control
const isMain = (m) => m === "model" || m === "esm2";
const modelName = (m) => isMain(m) ? D.model_family
  : ({shuffled: `shuffled ${D.model_family}`, random_init: `random-init ${D.model_family}`}[m] || m);
let benchModels = null;
function modelColour(m) {  // one per model of the bench, the study's model first, the others in table order
  benchModels = benchModels || [...new Set(D.bench.rows.map((r) => r[bcol("model")]))]
    .sort((a, b) => isMain(b) - isMain(a));
  return MODEL_COLOURS[Math.max(0, benchModels.indexOf(m)) % MODEL_COLOURS.length];
}
const bcol = (name) => D.bench.columns.indexOf(name);
function benchLayers() { return [...new Set(D.bench.rows.map((r) => r[bcol("layer")]))].sort((a, b) => a - b); }
// the page's features are those of the chosen SAE of the study's model, per layer shown
function browsable(model, layer, sae) {
  const x = D.layers.find((l) => l.layer === layer);
  return isMain(model) && !!x && x.sae === sae;
}
// a control: a baseline row (a control model, neurons, the hidden state)
function isControl(columns, r) {
  const m = columns.indexOf("model"), name = ["sae", "probe"].map((c) => columns.indexOf(c)).find((j) => j >= 0);
  const n = name === undefined ? "" : String(r[name]);
  return (m >= 0 && !isMain(r[m])) || n === "neurons" || n.startsWith("hidden");
}

function showBench(layer, push) {
  mode = "bench"; sel = null; concept = null; V.row = null;
  for (const li of document.querySelectorAll("#features li.sel")) li.classList.remove("sel");
  const box = $("feature");
  box.dataset.feature = "";
  if (!D.bench) {
    benchLayer = layer;
    box.replaceChildren(el("h2", {text: "The SAE bench"}), el("p", {class: "empty",
      text: "No bench in this page (the pipeline's bench stage; scripts/report.py --bench DIR)."}));
    if (push !== false) pushState();
    return;
  }
  const layers = benchLayers();
  benchLayer = layers.includes(layer) ? layer : layers.includes(L.layer) ? L.layer : layers[0];
  const pick = el("select", {id: "benchlayer"}, ...layers.map((x) => el("option", {value: String(x), text: `layer ${x}`})));
  pick.value = String(benchLayer);
  pick.addEventListener("change", () => {
    const v = Number(pick.value);
    if (D.layers.some((x) => x.layer === v) && L.layer !== v) showLayer(v);
    showBench(v);
  });
  const B = D.bench, rows = B.rows.filter((r) => r[bcol("layer")] === benchLayer);
  const chosen = D.layers.find((x) => x.layer === benchLayer);
  box.replaceChildren(el("h2", {}, `Layer ${benchLayer} \u00b7 the SAE bench `, pick));
  if (B.warnings.length) {
    box.append(el("div", {class: "warnings", id: "benchwarnings"}, el("b", {text: "Small-study warnings"}),
      el("ul", {}, ...B.warnings.map((w) => el("li", {text: w})))));
  }
  box.append(el("div", {class: "plots", id: "pareto"}, ...PARETO.map(([y, label]) => paretoPlot(rows, y, label))),
    el("div", {class: "legend", id: "benchnote"}, chosen
      ? `Only the chosen SAE's features (${chosen.sae}) are in this page: click its point or row to open them.`
      : "No SAE of this layer has its features in this page."),
    el("h3", {text: "Every SAE of the grid, with the controls"}),
    el("div", {id: "benchtable"}, benchTable(B.columns, rows)),
    help("One row per SAE trained on this layer (and per control: neurons, SAEs of the grid trained the same way " +
      `on ${D.model_family} with shuffled weights or with random weights), measured on held-out proteins. L0: features active ` +
      "per residue; FVE: fraction of the activations' variance the SAE reconstructs; dead: features never active; " +
      "dense: features active on more than 10% of residues; loss recovered: how much of the language model's loss " +
      "the SAE's reconstruction keeps when spliced in (1: as the real activations, 0: as zeros); concepts: UniProt " +
      "concepts with a feature at F1 > 0.5 on the validation proteins; best F1 (valid): the mean over concepts of the " +
      "best feature's F1 there (the selection score); test F1: the features chosen per concept on the validation " +
      "proteins, scored on the test proteins. Tinted rows are controls. Click a column to sort."));
  for (const t of B.tables) {
    const li = t.columns.indexOf("layer"), here = li < 0 ? t.rows : t.rows.filter((r) => r[li] === benchLayer);
    box.append(el("h3", {text: t.title}), el("div", {id: `benchtable-${t.key}`},
      here.length ? sortable(t.columns, here, {hide: ["layer"]}) : el("p", {class: "empty", text: "nothing for this layer"})),
    help(t.note));
  }
  if (push !== false) pushState();
}

function benchOpen(model, layer, sae) {
  if (browsable(model, layer, sae)) {
    showLayer(layer);
    $("feature").replaceChildren(el("h2", {text: `Layer ${layer} \u00b7 SAE ${sae}`}), el("p", {class: "empty", id: "benchopened",
      text: `The features of ${sae} (the chosen SAE of layer ${layer}) are listed on the left: choose one, search, or use the map.`}));
    pushState();
    $("features").scrollIntoView({block: "nearest"});
    return;
  }
  const x = D.layers.find((l) => l.layer === layer);
  $("benchnote").textContent = `${modelName(model)} \u00b7 layer ${layer} \u00b7 ${sae}: measured in the bench, but its ` +
    `features are not in this page; only the chosen SAE's are${x ? ` (${x.sae})` : ""}.`;
  $("benchnote").classList.add("flash");
}

// bench.csv rows of one layer: the SAE cell links to the features where they are in the page
function benchTable(columns, rows) {
  const m = columns.indexOf("model"), s = columns.indexOf("sae"), lay = columns.indexOf("layer");
  return sortable(columns, rows, {hide: ["layer"],
    cell: (r, j) => (j === s && browsable(r[m], r[lay], r[s]) ? saeLink(r[m], r[lay], r[s]) : undefined),
    click: (r) => benchOpen(r[m], r[lay], r[s])});
}
function saeLink(model, layer, sae) {
  const a = el("a", {href: `#layer=${layer}`, text: sae, "data-browse": sae});
  a.addEventListener("click", (ev) => { ev.preventDefault(); ev.stopPropagation(); benchOpen(model, layer, sae); });
  return a;
}

// A table sortable by any column (click its header; again: the other way; empty cells last).
// A "chosen" column marks its rows (shown as a check); control rows are tinted. opts: hide
// (column names), cell(row, j) (a node to show instead of the value, or undefined), click(row).
function sortable(columns, rows, opts) {
  opts = opts || {};
  const shown = columns.map((c, j) => j).filter((j) => !(opts.hide || []).includes(columns[j]));
  const ch = columns.indexOf("chosen"), m = columns.indexOf("model");
  const t = el("table", {class: "sortable"}), head = el("tr"), body = el("tbody");
  let by = null, dir = 1;
  const render = () => {
    const order = rows.slice();
    if (by !== null) {
      order.sort((a, b) => {
        const x = a[by], y = b[by];
        if (x === null || x === undefined) return y === null || y === undefined ? 0 : 1;
        if (y === null || y === undefined) return -1;
        return dir * (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y)));
      });
    }
    body.replaceChildren(...order.map((r) => {
      const tr = el("tr", {class: [ch >= 0 && r[ch] ? "chosen" : "", isControl(columns, r) ? "control" : ""].join(" ").trim()},
        ...shown.map((j) => {
          const own = opts.cell && opts.cell(r, j), v = own !== undefined ? own : j === m ? modelName(r[j]) : r[j];
          if (v instanceof Node) return el("td", {class: "l", "data-col": columns[j]}, v);
          if (j === ch) return el("td", {"data-col": "chosen", "data-value": String(!!v), text: v ? "\u2713" : ""});
          const td = el("td", {class: typeof v === "string" ? "l" : "", "data-col": columns[j], text: fmt(v)});
          if (typeof r[j] === "number") td.dataset.value = String(r[j]);
          return td;
        }));
      if (m >= 0) tr.firstChild.style.borderLeft = `3px solid ${modelColour(r[m])}`;
      if (opts.click) { tr.classList.add("clickable"); tr.addEventListener("click", () => opts.click(r)); }
      return tr;
    }));
    for (const th of head.children) {
      const j = Number(th.dataset.index);
      th.dataset.sort = j === by ? (dir > 0 ? "ascending" : "descending") : "";
      th.setAttribute("aria-sort", j === by ? (dir > 0 ? "ascending" : "descending") : "none");
    }
  };
  for (const j of shown) {
    const th = el("th", {"data-col": columns[j], "data-index": String(j), title: "sort by this column",
      class: rows.some((r) => typeof r[j] === "string") ? "l" : "",
      text: BENCH_HEADERS[columns[j]] || HEADERS[columns[j]] || columns[j]});
    th.addEventListener("click", () => { dir = by === j ? -dir : 1; by = j; render(); });
    head.append(th);
  }
  t.append(el("thead", {}, head), body);
  render();
  return el("div", {class: "tablewrap"}, t);
}

// indices of the points no other beats (lower or equal x and higher or equal y, one strictly),
// by x: as interplm_jax.bench.table.pareto_front
function paretoFront(x, y) {
  const order = x.map((_, i) => i).sort((a, b) => x[a] - x[b] || y[b] - y[a]);
  const keep = [];
  let best = -Infinity;
  for (const i of order) if (y[i] > best) { keep.push(i); best = y[i]; }
  return keep;
}
function niceTicks(lo, hi, n, integer) {
  const span = hi - lo || Math.abs(hi) || 1, raw = span / n, p = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((k) => k * p).find((s) => s >= raw);
  if (integer) step = Math.max(1, Math.round(step));
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}
function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const k of [1, 2, 5]) { const v = k * 10 ** e; if (v >= lo && v <= hi) out.push(v); }
  }
  return out;
}

// L0 against y for one layer's rows: each model's SAEs (its Pareto front as a line, the
// chosen SAE ringed), the neurons as reference stars; hover a point for its SAE
function paretoPlot(rows, y, label) {
  const B = D.bench, ci = {x: bcol("l0"), y: bcol(y), m: bcol("model"), s: bcol("sae"), L: bcol("layer"), c: bcol("chosen")};
  const pts = rows.filter((r) => Number.isFinite(r[ci.x]) && Number.isFinite(r[ci.y]));
  const fig = el("figure", {class: "plot", "data-y": y}, el("figcaption", {text: `L0 vs ${label.split(" (")[0]}`}));
  if (!pts.length) {
    fig.append(el("p", {class: "empty", text: `Nothing to draw: no SAE of layer ${benchLayer} has a measured ` +
      `${BENCH_HEADERS[y] || y}` + (y === "loss_recovered" ? " (the bench was measured without --fidelity)." : ".")}));
    return fig;
  }
  const W = 420, H = 250, ml = 48, mr = 12, mt = 10, mb = 38;
  const xs = pts.map((r) => r[ci.x]), ys = pts.map((r) => r[ci.y]);
  const xlo = Math.min(...xs), xhi = Math.max(...xs), log = xlo > 0 && xhi / xlo > 20;
  const fx = log ? Math.log10 : (v) => v;
  let [a, b] = [fx(xlo), fx(xhi)], pad = (b - a) * 0.06 || Math.abs(a) * 0.1 || 1;
  a -= pad; b += pad;
  let [c, d] = [Math.min(...ys), Math.max(...ys)];
  pad = (d - c) * 0.08 || Math.abs(c) * 0.05 || 0.5;
  c -= pad; d += pad;
  const X = (v) => ml + ((fx(v) - a) / (b - a)) * (W - ml - mr), Y = (v) => mt + ((d - v) / (d - c)) * (H - mt - mb);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("class", "pareto");
  const add = (parent, tag, attrs, text) => {
    const e = document.createElementNS(svg.namespaceURI, tag);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) e.textContent = text;
    parent.append(e); return e;
  };
  const axis = {stroke: "#98a2b3"}, small = {"font-size": 10, fill: "#667085"};
  add(svg, "line", {...axis, x1: ml, x2: W - mr, y1: H - mb, y2: H - mb});
  add(svg, "line", {...axis, x1: ml, x2: ml, y1: mt, y2: H - mb});
  const xt = log ? logTicks(10 ** a, 10 ** b) : niceTicks(a, b, 5);
  for (const v of xt) {
    add(svg, "line", {...axis, x1: X(v), x2: X(v), y1: H - mb, y2: H - mb + 4});
    add(svg, "text", {...small, x: X(v), y: H - mb + 15, "text-anchor": "middle"}, fmt(v, Math.abs(v) < 10 ? 2 : 0));
  }
  for (const v of niceTicks(c, d, 4, y === "n_concepts")) {
    add(svg, "line", {stroke: "#eef0f3", x1: ml, x2: W - mr, y1: Y(v), y2: Y(v)});
    add(svg, "text", {...small, x: ml - 5, y: Y(v) + 3, "text-anchor": "end"}, fmt(v, Number.isInteger(v) ? 0 : 3));
  }
  add(svg, "text", {...small, x: (ml + W - mr) / 2, y: H - 6, "text-anchor": "middle"}, `L0 (active features per residue, test${log ? ", log" : ""})`);
  add(svg, "text", {...small, x: 11, y: (mt + H - mb) / 2, "text-anchor": "middle", transform: `rotate(-90 11 ${(mt + H - mb) / 2})`}, label);
  const models = [...new Set(pts.map((r) => r[ci.m]))];
  const onFront = new Set();
  for (const model of models) {  // the front of each model's SAEs (not the neurons)
    const group = pts.filter((r) => r[ci.m] === model && r[ci.s] !== "neurons");
    const front = paretoFront(group.map((r) => r[ci.x]), group.map((r) => r[ci.y])).map((i) => group[i]);
    front.forEach((r) => onFront.add(r));
    if (front.length > 1) {
      add(svg, "polyline", {points: front.map((r) => `${X(r[ci.x])},${Y(r[ci.y])}`).join(" "), fill: "none",
        stroke: modelColour(model), "stroke-width": 1.5, "stroke-opacity": 0.7, "stroke-dasharray": isMain(model) ? "" : "5 3",
        class: "front", "data-model": model});
    }
  }
  const tip = el("div", {class: "tip", hidden: ""});
  for (const r of pts.slice().sort((p, q) => (p[ci.s] === "neurons") - (q[ci.s] === "neurons"))) {
    const model = r[ci.m], sae = r[ci.s], px = X(r[ci.x]), py = Y(r[ci.y]);
    const g = add(svg, "g", {class: "pt", "data-model": model, "data-sae": sae, "data-layer": String(r[ci.L]),
      "data-x": String(r[ci.x]), "data-y": String(r[ci.y]), "data-front": onFront.has(r) ? "1" : "0",
      "data-chosen": r[ci.c] ? "1" : "0"});
    if (sae === "neurons") {
      const star = [];
      for (let k = 0; k < 10; k++) {
        const rad = k % 2 ? 3.4 : 8, t = Math.PI / 2 + (k * Math.PI) / 5;
        star.push(`${(px + rad * Math.cos(t)).toFixed(1)},${(py - rad * Math.sin(t)).toFixed(1)}`);
      }
      add(g, "polygon", {points: star.join(" "), fill: modelColour(model), stroke: "#1d232b", "stroke-width": 0.8});
    } else {
      add(g, "circle", {cx: px, cy: py, r: 4.5, fill: modelColour(model), "fill-opacity": 0.85, stroke: "#fff", "stroke-width": 0.8});
    }
    if (r[ci.c]) add(g, "circle", {cx: px, cy: py, r: 8.5, fill: "none", stroke: "#d62728", "stroke-width": 2, class: "ring"});
    add(g, "circle", {cx: px, cy: py, r: 10, fill: "transparent", class: "hit"});  // an easier target
    g.addEventListener("mouseenter", () => {
      tip.replaceChildren(...pointText(r).map((line, k) => el("div", {class: k ? "" : "tiphead", text: line})));
      tip.hidden = false;
      const box = svg.getBoundingClientRect(), s = box.width / W;
      tip.style.left = `${Math.min(px * s + 12, box.width - 230)}px`; tip.style.top = `${py * s + 10}px`;
    });
    g.addEventListener("mouseleave", () => { tip.hidden = true; });
    g.addEventListener("click", () => benchOpen(model, r[ci.L], sae));
  }
  const legend = el("div", {class: "legend"}, ...models.map((m) => el("span", {class: "tk"},
    el("i", {style: `background:${modelColour(m)};height:8px;width:8px;border-radius:50%`}), modelName(m))),
    "\u2605 neurons \u00b7 red ring: chosen \u00b7 line: Pareto front");
  fig.append(el("div", {class: "plotbox"}, svg, tip), legend);
  return fig;
}
// a point's tooltip: which SAE, its hyperparameters, its numbers
function pointText(r) {
  const B = D.bench, get = (c) => r[bcol(c)], sae = get("sae");
  const hp = [get("arch") && `arch ${get("arch")}`, ...B.hparams.filter((h) => get(h) !== null && get(h) !== undefined)
    .map((h) => `${h} ${get(h)}`)].filter(Boolean);
  const nums = ["l0", "fve", "loss_recovered", "n_concepts", "test_f1"].filter((c) => bcol(c) >= 0)
    .map((c) => `${BENCH_HEADERS[c]} ${fmt(get(c))}`);
  return [`${modelName(get("model"))} \u00b7 layer ${get("layer")} \u00b7 ${sae}${get("chosen") ? " (chosen)" : ""}`,
    hp.join(" \u00b7 "), nums.join(" \u00b7 "),
    browsable(get("model"), get("layer"), sae) ? "click: open its features" : "its features are not in this page"];
}
