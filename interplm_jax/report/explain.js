// The one-protein page (scripts/explain.py): a protein's features per residue, coloured on the
// sequence and the structure; hover a residue for its strongest features. Runs after util.js
// and viewer.js, in the same scope.
let D = null, P = null, cur = null, feat = null;

function label(f) {  // best concept above the minimum F1, else the LLM summary, else ""
  const c = (D.concepts[String(f)] || [])[0];
  if (c && c[1] > D.config.label_min_f1) return `${niceConcept(D.concept_names[c[0]])} (F1 ${fmt(c[1], 2)})`;
  const d = D.descriptions[String(f)];
  return d ? d.summary : "";
}
// feature row [f, max, b64] -> Float64Array of activations over the sequence
function acts(row) {
  const q = decode(row[2]), out = new Float64Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = q[i] * row[1] / 255;
  return out;
}
function showProtein(k) {
  cur = k;
  const p = D.proteins[k], rows = p.features.slice().sort((a, b) => b[1] - a[1]);
  $("featurelist").replaceChildren(el("h2", {text: `Features of ${p.id} (layer ${D.layer}, SAE ${D.sae})`}),
    help("The features shown: the strongest few at each residue and the proteins' overall strongest. " +
      "Click one to colour the sequence and the structure by it."),
    table(["feature", "max", "concept or description"], rows.map((r) => {
      const a = el("a", {href: "#", "data-feature": String(r[0]), text: `#${r[0]}`});
      a.addEventListener("click", (ev) => { ev.preventDefault(); showFeature(r[0]); });
      return [a, r[1], label(r[0]) || "no concept"];
    })));
  showFeature(rows.length ? rows[0][0] : null);
}
function showFeature(f) {
  feat = f;
  const p = D.proteins[cur], row = p.features.find((r) => r[0] === f), box = $("protein");
  const a = row ? acts(row) : new Float64Array(p.seq.length), max = row ? row[1] : 1;
  box.replaceChildren(el("h2", {}, link(uniprotURL(p.id), p.id), ` \u00b7 ${p.seq.length} aa`),
    el("div", {class: "label", id: "label", text: row ? `feature #${f}: ${label(f) || "no concept"}` : "no active feature"}));
  const d = D.descriptions[String(f)];
  if (d) box.append(el("div", {class: "desc", id: "description"}, el("b", {text: d.summary}), d.description ? el("div", {text: d.description}) : null));
  const strip = el("div", {class: "strip"});
  for (let i = 0; i < p.seq.length; i++) {
    const t = a[i] / max, cell = el("span", {style: `background:${heat(t)};color:${t > 150 / 255 ? "#fff" : "#1d232b"}`,
      "data-pos": String(i), "data-act": a[i].toPrecision(6), title: `${p.seq[i]}${i + 1}: ${a[i].toFixed(4)}`, text: p.seq[i]});
    cell.addEventListener("mouseenter", () => { showResidue(i); if (V.row === cur) hoverResidue(i, false); });
    strip.append(cell);
  }
  box.append(el("h3", {}, "Activation ", el("span", {class: "scale"}), el("span", {class: "muted", text: ` 0 \u2013 ${fmt(max)}`})),
    el("div", {class: "protein", "data-protein": p.id}, strip));
  if (p.structure) {
    const v = el("div", {class: "viewer3d", id: "viewer3d"});
    box.append(el("h3", {text: "Structure"}), v, el("div", {class: "legend", text: "Cartoon coloured by the feature's activation; hover a residue here or in the sequence."}));
    showStructure(v, cur, a, max, []);
  }
}
function showResidue(i) {
  const p = D.proteins[cur];
  const here = p.features.map((r) => [r[0], decode(r[2])[i] * r[1] / 255]).filter((x) => x[1] > 0).sort((x, y) => y[1] - x[1]);
  $("residue").replaceChildren(el("h2", {text: `${p.seq[i]}${i + 1}: strongest features`}),
    here.length ? table(["feature", "activation", "concept or description"], here.map(([f, v]) => [`#${f}`, v, label(f) || "no concept"]))
      : el("p", {class: "empty", text: "no feature shown is active here"}));
}
async function start() {
  D = JSON.parse(await inflate("data"));
  // viewer.js reads the protein table as the browser's: id, seq, structure per row
  P = {id: D.proteins.map((p) => p.id), seq: D.proteins.map((p) => p.seq), structure: D.proteins.map((p) => p.structure)};
  $("meta").textContent = [D.model, `layer ${D.layer}`, `SAE ${D.sae}`].filter(Boolean).join(" \u00b7 ");
  if (D.proteins.length > 1) {
    const s = el("select", {id: "proteinpick"}, ...D.proteins.map((p, k) => el("option", {value: String(k), text: p.id})));
    s.addEventListener("change", () => showProtein(Number(s.value)));
    document.querySelector("header").append(el("label", {text: "Protein "}, s));
  }
  showProtein(0);
  window.featureBrowser = {data: D, showFeature, showProtein, viewerColours, viewerSticks, structureShown: () => (V.viewer ? P.id[V.row] : null)};
  document.body.dataset.ready = "1";
}
start().catch((e) => {
  document.body.prepend(el("pre", {class: "fatal", text: `The page could not start: ${e}`}));
  throw e;
});
