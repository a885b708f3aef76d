// The feature panel: numbers, description, best concepts, histogram, the 3-D view and the top
// proteins with their activation strips and annotation tracks.
const TRACK_COLOURS = ["#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4"];
let picked = null;  // a concept the user chose to see on the sequences and as sticks (name)

function concepts(f) { return (L.concepts && L.concepts.by_feature[String(f)]) || []; }
function bestLabel(f) {  // the concept label above the minimum F1, else the LLM summary
  const c = concepts(f)[0];
  if (c && c[1] > D.config.label_min_f1) return `${niceConcept(L.concepts.names[c[0]])} (F1 ${fmt(c[1], 2)})`;
  const d = L.descriptions && L.descriptions[String(f)];
  return d ? d.summary : "";
}
function trackIndex(name) { return D.track_names.indexOf(name); }
// concepts drawn under the strips: the feature's best ones, then the one picked
function trackConcepts(f) {
  const names = concepts(f).map((c) => L.concepts.names[c[0]]);
  if (picked && !names.includes(picked)) names.push(picked);
  return names.filter((n) => trackIndex(n) >= 0);
}
// (protein row, concept name) -> Set of annotated 0-based positions
function annotated(row, name) {
  const t = trackIndex(name), out = new Set();
  for (const [c, a, b] of P.tracks[row] || []) if (c === t) for (let i = a; i < b; i++) out.add(i);
  return out;
}
// one example [row, max, start, b64] -> activations over the whole sequence (NaN: not stored)
function exampleActs(ex, scale) {
  const [row, , start, b64] = ex, q = decode(b64), acts = new Float64Array(P.seq[row].length).fill(NaN);
  for (let k = 0; k < q.length; k++) acts[start + k] = q[k] * scale / 255;
  return acts;
}

function showFeature(f, push, row) {
  mode = "feature"; sel = f; concept = null; V.row = null;
  for (const li of document.querySelectorAll("#features li")) li.classList.toggle("sel", li.dataset.feature === String(f));
  drawUmap();
  const box = $("feature"), i = liveIndex().get(f);
  box.replaceChildren(el("h2", {text: `Layer ${L.layer} \u00b7 feature #${f}`}));
  box.dataset.feature = String(f);
  if (i === undefined) {
    box.append(el("p", {class: "empty", text: "Dead feature: never active on the proteins of this study."}));
    if (push !== false) pushState();
    return;
  }
  const F = L.features, best = concepts(f)[0];
  box.append(el("div", {class: "label", id: "label", text: best && best[1] > D.config.label_min_f1
    ? niceConcept(L.concepts.names[best[0]]) : `no concept (best F1 ${best ? fmt(best[1], 2) : "\u2013"} \u2264 ${D.config.label_min_f1})`}));
  const stats = el("div", {class: "stats"},
    el("span", {}, "max activation ", el("b", {text: fmt(F.max[i])})),
    el("span", {}, "active on ", el("b", {text: `${fmt(100 * F.freq[i], 1)}%`}), " of proteins"));
  if (L.umap && L.umap.cluster[f] !== null) stats.append(el("span", {}, "cluster ", el("b", {text: L.umap.cluster[f] < 0 ? "noise" : String(L.umap.cluster[f])})));
  box.append(stats);
  const d = L.descriptions && L.descriptions[String(f)];
  if (d) {
    box.append(el("h3", {text: "LLM description"}), el("div", {class: "desc", id: "description"},
      el("b", {text: d.summary}), d.description ? el("div", {text: d.description}) : null,
      d.pearson_r !== undefined ? el("div", {class: "muted", text: `validation Pearson r ${fmt(d.pearson_r, 2)}`}) : null));
  }
  if (L.concepts) box.append(conceptTable(f));
  if (F.hist) box.append(el("h3", {text: "Residues of the evaluation proteins by activation"}), histogram(F.hist[i]),
    help("How many residues of the evaluation proteins have each activation of this feature (log scale): " +
      "the grey bar counts the residues where it is off (exactly 0), the red ones equal steps of the activation " +
      (L.normalized ? "(normalized: 1 is the feature's maximum on the proteins it was normalized on)" : "(this SAE is not normalized: raw activations)") +
      ", and a last bar those above 1, if any."));
  if (L.spatial) {
    const r = L.spatial.rows[String(f)];
    box.append(el("h3", {text: "Sequential vs structural clustering"}),
      r ? el("div", {id: "spatial"}, table(L.spatial.columns, [r])) : el("p", {class: "empty", text: "not enough proteins with structures"}));
  }
  const examples = F.top[i].map((ex) => ({ex, scale: F.max[i], whole: false}));
  const st = F.struct && F.struct[String(f)];
  if (st) for (const ex of st.top) if (!examples.some((e) => e.ex[0] === ex[0])) examples.push({ex, scale: st.max, whole: true});
  box.append(structureSection(f, examples, F.max[i], row));
  box.append(el("h3", {}, "Top proteins ", el("span", {class: "muted", text: "activation: "}), el("span", {class: "scale"}),
    el("span", {class: "muted", text: ` 0 \u2013 ${fmt(F.max[i])}`})),
    help("The proteins where this feature is strongest, one cell per residue, coloured by activation " +
      "(white: off; dark red: the feature's maximum over the study). Long proteins show the residues " +
      "around their strongest one. Coloured bars under a residue: it is annotated with that concept in UniProt."));
  const tracks = trackConcepts(f);
  if (tracks.length) box.append(el("div", {class: "legend", id: "tracklegend"}, "annotations: ",
    ...tracks.map((n) => el("span", {class: "tk"}, el("i", {style: `background:${TRACK_COLOURS[trackIndex(n) % TRACK_COLOURS.length]}`}), niceConcept(n)))));
  for (const e of examples.filter((x) => !x.whole)) box.append(proteinBlock(e, F.max[i], tracks));
  const whole = examples.filter((x) => x.whole);
  if (whole.length) {
    box.append(el("h3", {text: "Proteins with structures (whole sequences)"}),
      help("The strongest proteins of this feature among those with a structure in the study, whole."));
    for (const e of whole) box.append(proteinBlock(e, F.max[i], tracks));
  }
  if (push !== false) pushState();
}

function conceptTable(f) {
  const rows = concepts(f).map((c) => [conceptButton(L.concepts.names[c[0]]), ...c.slice(1)]);
  const cols = ["concept", "F1", "precision", "recall", "threshold"].concat(L.concepts.has_test ? ["test F1"] : []);
  return el("div", {}, el("h3", {text: `Best concepts (${L.concepts.split} split)`}),
    rows.length ? el("div", {id: "concepts"}, table(cols, rows)) : el("p", {class: "empty", text: "no concept with F1 > 0"}),
    help("UniProt concepts this feature predicts best. Precision: of the residues where the feature is above the " +
      "threshold, the share annotated with the concept; recall: the share of the concept's residues (or domains) " +
      "it finds; F1: their harmonic mean, at the threshold best on these proteins. Click a concept for the " +
      "features, neurons and baselines that find it best."));
}
function conceptButton(name) {
  const a = el("a", {href: `#layer=${L.layer}&concept=${encodeURIComponent(name)}`, class: "concept", "data-concept": name, text: niceConcept(name)});
  a.addEventListener("click", (ev) => { ev.preventDefault(); showConcept(name); });
  return a;
}
// counts: [exactly 0, bins of (0, 1] ..., above 1] (docs/report.md); log count axis
function histogram(counts) {
  const W = 300, H = 80, X = 34, n = counts.length, bins = n - 2, top = Math.log10(1 + Math.max(...counts));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${X + W} ${H + 28}`); svg.setAttribute("class", "hist"); svg.id = "hist";
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(svg.namespaceURI, tag);
    Object.entries(attrs).forEach(([a, v]) => e.setAttribute(a, v));
    if (text !== undefined) e.textContent = text;
    svg.append(e); return e;
  };
  const y = (c) => H - (top > 0 ? (H * Math.log10(1 + c)) / top : 0);
  const shown = counts[n - 1] > 0 ? n : n - 1, w = W / shown;
  counts.slice(0, shown).forEach((c, k) => {
    const what = k === 0 ? "activation exactly 0" : k > bins ? "activation above 1"
      : `activation in ${k === 1 ? "(" : "["}${fmt((k - 1) / bins, 2)}, ${fmt(k / bins, 2)}${k === bins ? "]" : ")"}`;
    add("rect", {x: X + k * w + 0.5, y: y(c), width: w - 1, height: H - y(c), fill: k === 0 ? "#98a2b3" : "#d7301f",
      "data-bin": String(k), "data-count": String(c)}).append(
      Object.assign(document.createElementNS(svg.namespaceURI, "title"), {textContent: `${c} residues with ${what}`}));
  });
  for (let p = 1; 10 ** p <= Math.max(...counts); p += Math.max(1, Math.ceil(top / 4))) {  // ticks at powers of ten
    add("line", {x1: X - 3, x2: X, y1: y(10 ** p), y2: y(10 ** p), stroke: "#667085"});
    add("text", {x: X - 4, y: y(10 ** p) + 3, "font-size": 9, "text-anchor": "end", fill: "#667085"},
      p < 3 ? String(10 ** p) : p < 6 ? `${10 ** (p - 3)}k` : `${10 ** (p - 6)}M`);
  }
  const label = {"font-size": 10, fill: "#667085"};
  add("text", {...label, x: X + w / 2, y: H + 12, "text-anchor": "middle"}, "off");
  add("text", {...label, x: X + w + 4, y: H + 12}, "0");
  add("text", {...label, x: X + (bins + 1) * w, y: H + 12, "text-anchor": "end"}, "1");
  if (shown === n) add("text", {...label, x: X + W, y: H + 12, "text-anchor": "end"}, ">1");
  add("text", {...label, x: X + W / 2, y: H + 25, "text-anchor": "middle"}, `${L.normalized ? "normalized " : ""}activation`);
  add("text", {...label, x: 9, y: H / 2, "text-anchor": "middle", transform: `rotate(-90 9 ${H / 2})`}, "residues (log)");
  return svg;
}

function proteinBlock(e, fmax, tracks) {
  const [row, m, start, b64] = e.ex, q = decode(b64), seq = P.seq[row], scale = e.scale / 255;
  const marks = tracks.map((n) => [n, annotated(row, n)]).filter(([, s]) => s.size);
  const strip = el("div", {class: "strip"});
  if (start > 0) strip.append(el("span", {class: "tick", text: `${start + 1}\u2026`}));
  for (let k = 0; k < q.length; k++) {
    const a = q[k] * scale, pos = start + k, t = a / fmax;
    const cell = el("span", {style: `background:${heat(t)};color:${t > 150 / 255 ? "#fff" : "#1d232b"}`,
      "data-pos": String(pos), "data-act": a.toPrecision(6), title: `${seq[pos]}${pos + 1}: ${a.toFixed(4)}`, text: seq[pos]});
    for (const [n, s] of marks) {
      if (s.has(pos)) cell.append(el("i", {class: "tr", "data-concept": n, style: `background:${TRACK_COLOURS[trackIndex(n) % TRACK_COLOURS.length]}`}));
    }
    cell.addEventListener("mouseenter", () => { if (V.row === row) hoverResidue(pos, false); });
    strip.append(cell);
  }
  if (start + q.length < seq.length) strip.append(el("span", {class: "tick", text: `\u2026${seq.length}`}));
  const id = P.id[row], head = el("div", {class: "phead"}, el("span", {class: "pid"}, link(uniprotURL(id), id)),
    el("span", {text: P.name[row] || ""}), el("span", {class: "muted", text: P.organism[row] || ""}),
    el("span", {class: "muted", text: `max ${fmt(m)} \u00b7 ${seq.length} aa`}));
  if (P.structure[row]) {
    const b = el("button", {class: "show3d", text: "3-D"});
    b.addEventListener("click", () => focusStructure(row));
    head.append(link(alphafoldURL(id), "AlphaFold DB"), b);
  }
  const block = el("div", {class: e.whole ? "protein whole" : "protein", "data-protein": id, "data-row": String(row)}, head, strip);
  if (e.ex[4]) block.append(profileView(decode(e.ex[4]), seq.length, start, q.length, e.scale, fmax));
  return block;
}
// the whole sequence, max-pooled into bins (folded): bars coloured and sized by activation,
// the window shown above outlined
function profileView(p, n, start, width, scale, fmax) {
  const W = 600, H = 40, svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + 12}`); svg.setAttribute("class", "profile");
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(svg.namespaceURI, tag);
    Object.entries(attrs).forEach(([a, v]) => e.setAttribute(a, v));
    if (text !== undefined) e.textContent = text;
    svg.append(e); return e;
  };
  add("rect", {x: (start / n) * W, y: 0, width: (width / n) * W, height: H, fill: "#fff4d6", stroke: "#e0c080"});
  p.forEach((v, b) => {
    const a = (v * scale) / 255, h = Math.max(1, (H * a) / fmax), lo = Math.floor((b * n) / p.length), hi = Math.floor(((b + 1) * n) / p.length);
    add("rect", {x: (lo / n) * W, y: H - h, width: Math.max(1, ((hi - lo) / n) * W - 0.3), height: h, fill: heat(a / fmax),
      "data-bin": String(b), "data-act": a.toPrecision(6)}).append(Object.assign(document.createElementNS(svg.namespaceURI, "title"),
      {textContent: `residues ${lo + 1}\u2013${hi}: max ${a.toFixed(4)}`}));
  });
  add("text", {x: 0, y: H + 11, "font-size": 10, fill: "#667085"}, "1");
  add("text", {x: W, y: H + 11, "font-size": 10, fill: "#667085", "text-anchor": "end"}, String(n));
  return el("details", {class: "wholeseq"}, el("summary", {text: `activation over the whole sequence (${n} aa; the window above outlined)`}), svg);
}

function structureSection(f, examples, fmax, wantRow) {
  const withStructure = examples.filter((e) => P.structure[e.ex[0]]);
  const sec = el("div", {id: "structure"}, el("h3", {text: "Structure"}));
  if (!withStructure.length) {
    sec.append(el("p", {class: "empty", text: "None of these proteins has a structure in this study."}));
    return sec;
  }
  const chooser = el("div", {class: "row", id: "structurepick"});
  const names = L.concepts ? D.track_names : [];
  const stickPick = el("select", {id: "stickpick"}, el("option", {value: "", text: "concept as sticks: none"}),
    ...names.map((n) => el("option", {value: n, text: niceConcept(n)})));
  const box = el("div", {class: "viewer3d", id: "viewer3d"});
  const note = el("div", {class: "legend", id: "structnote"});
  let current = null;
  const draw = (e) => {
    current = e;
    const row = e.ex[0], acts = exampleActs(e.ex, e.scale), sticks = stickPick.value ? [...annotated(row, stickPick.value)] : [];
    for (const b of chooser.querySelectorAll("button")) b.classList.toggle("sel", b.dataset.row === String(row));
    note.textContent = `${P.id[row]}: cartoon coloured by activation (0 \u2013 ${fmt(fmax)}; grey: residues not stored)` +
      (stickPick.value ? `; ${sticks.length} residue(s) annotated \u201c${niceConcept(stickPick.value)}\u201d as sticks` : "") + ". Hover a residue here or in its strip.";
    showStructure(box, row, acts, fmax, sticks).then(() => {
      if (mode === "feature" && sel === f) history.replaceState(null, "", stateHash());
    });
  };
  for (const e of withStructure) {
    const b = el("button", {"data-row": String(e.ex[0]), text: P.id[e.ex[0]]});
    b.addEventListener("click", () => draw(e));
    chooser.append(b);
  }
  chooser.append(stickPick);
  stickPick.addEventListener("change", () => { picked = stickPick.value || null; if (current) draw(current); });
  const best = concepts(f).map((c) => L.concepts.names[c[0]]).find((n) => withStructure.some((e) => annotated(e.ex[0], n).size));
  stickPick.value = picked || best || "";
  sec.append(chooser, box, note, help("The protein's predicted (AlphaFold) or experimental structure, drawn as a cartoon " +
    "coloured like the strips. Choose a concept to show its annotated residues as green sticks. Drag to rotate, scroll to zoom."));
  focusStructure = (row) => { const e = withStructure.find((x) => x.ex[0] === row); if (e) { draw(e); box.scrollIntoView({block: "nearest"}); } };
  draw(withStructure.find((e) => e.ex[0] === wantRow) || withStructure[0]);
  return sec;
}
let focusStructure = () => {};
