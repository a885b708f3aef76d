// The concept view: pick a concept -> the features that find it best (F1 on valid, test F1 at
// the threshold chosen on valid) for the chosen SAE beside the baselines, on one screen.
// The chosen SAE and its baselines, in this order; named with the model family (D.model_family).
const KIND_ORDER = ["sae", "neurons", "shuffled", "random_init"];
function kindName(kind, short) {
  const family = D.model_family;
  return {sae: short ? "SAE" : "SAE features", neurons: short ? "neurons" : `${family} neurons`,
    shuffled: `SAE on shuffled ${family}`, random_init: `SAE on randomly initialised ${family}`}[kind] || kind;
}

function conceptIndex(name) {
  return L.concepts ? L.concepts.names.indexOf(name) : -1;
}
function showConcept(name, push) {
  mode = "concept"; sel = null; concept = name; V.row = null;
  for (const li of document.querySelectorAll("#features li.sel")) li.classList.remove("sel");
  if (push !== false) pushState();
  const box = $("feature");
  box.dataset.feature = "";
  box.replaceChildren(el("h2", {text: `Layer ${L.layer} \u00b7 concept`}));
  if (!L.concepts) {
    box.append(el("p", {class: "empty", text: "No concept evaluation for this layer."}));
    return;
  }
  const names = L.concepts.names, pick = el("input", {id: "conceptpick", list: "conceptnames", type: "search",
    placeholder: "type a concept, e.g. Binding site", autocomplete: "off", value: name ? niceConcept(name) : ""});
  const dl = el("datalist", {id: "conceptnames"}, ...names.map((n) => el("option", {value: niceConcept(n)})));
  pick.addEventListener("change", () => {
    const n = names.find((x) => niceConcept(x) === pick.value);
    if (n) showConcept(n);
  });
  box.append(el("div", {class: "row"}, pick, dl),
    help("For one annotated concept (a UniProt feature such as a binding site), the features whose " +
      "activation predicts it best. F1 combines precision (of the residues where the feature is on, " +
      "the share that carry the concept) and recall (the share of the concept's residues, or domains, " +
      "the feature finds), at the activation threshold that is best on the validation proteins; test F1 " +
      "is the same threshold on held-out proteins. The baselines answer \u201cdoes the SAE find this " +
      `better than single ${D.model_family} neurons, or than an SAE trained the same way on ` +
      "a model with shuffled weights, or on a randomly initialised one?\u201d"));
  const c = conceptIndex(name);
  if (c < 0) {
    box.append(el("p", {class: "empty", text: name ? `Concept \u201c${name}\u201d is not evaluated in this layer.` : "Pick a concept."}));
    return;
  }
  box.append(el("h3", {id: "conceptname", text: niceConcept(name)}));
  const by = L.concepts.by_concept || {}, cols = ["feature", "F1", "precision", "recall", "threshold"]
    .concat(L.concepts.has_test ? ["test F1"] : []);
  const bestOf = (kind) => (by[kind] && by[kind][String(c)] || [])[0];
  box.append(el("div", {class: "stats", id: "conceptsummary"}, "best F1: ",
    ...KIND_ORDER.filter((k) => by[k]).map((k) => {
      const r = bestOf(k);
      return el("span", {}, `${kindName(k)} `, el("b", {text: r ? fmt(r[1]) : "\u2013"}),
        r && L.concepts.has_test ? ` (test ${fmt(r[5])})` : "");
    })));
  const wrap = el("div", {class: "sidebyside"});
  for (const kind of KIND_ORDER) {
    if (!by[kind]) continue;
    const rows = (by[kind][String(c)] || []).map((r) => [kind === "sae" ? featureLink(r[0]) : `#${r[0]}`, ...r.slice(1)]);
    wrap.append(el("div", {class: "kind", "data-kind": kind}, el("h3", {text: kindName(kind)}),
      rows.length ? table(cols, rows) : el("p", {class: "empty", text: "no feature with F1 > 0"})));
  }
  box.append(wrap);
}
function featureLink(f) {
  const a = el("a", {href: `#layer=${L.layer}&feature=${f}`, text: `#${f}`, "data-feature": String(f)});
  a.addEventListener("click", (ev) => { ev.preventDefault(); showFeature(f); });
  return a;
}
