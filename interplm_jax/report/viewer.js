// The 3-D view: 3Dmol.js (vendored, inflated on first use) draws a protein's cartoon from the
// embedded backbone, coloured per residue on the strips' scale; a concept's residues as sticks;
// hovering a residue highlights it here and in the strip, and the other way round.
const THREE = {A: "ALA", R: "ARG", N: "ASN", D: "ASP", C: "CYS", Q: "GLN", E: "GLU", G: "GLY", H: "HIS",
  I: "ILE", L: "LEU", K: "LYS", M: "MET", F: "PHE", P: "PRO", S: "SER", T: "THR", W: "TRP", Y: "TYR",
  V: "VAL", U: "SEC", O: "PYL"};
const BACKBONE = ["N", "CA", "C", "O"];
const RESOLUTION = 10, MISSING = -32768;  // as interplm_jax/report/structures.py
let viewerLib = null;
const V = {viewer: null, row: null, acts: null, scale: 1, token: 0};

async function loadViewer() {
  if (!viewerLib) viewerLib = inflate("viewer-lib").then((text) => { (0, eval)(text); return window.$3Dmol; });
  return viewerLib;
}
// protein row -> PDB text of its backbone (residue i+1 = sequence letter i)
function backbonePDB(row) {
  const q = new Int16Array(decode(P.structure[row]).buffer), seq = P.seq[row], lines = [];
  let serial = 0;
  for (let i = 0; i < seq.length; i++) {
    for (let j = 0; j < 4; j++) {
      const k = (i * 4 + j) * 3;
      if (q[k] === MISSING) continue;
      const [x, y, z] = [q[k], q[k + 1], q[k + 2]].map((v) => (v / RESOLUTION).toFixed(3).padStart(8));
      const name = BACKBONE[j].padEnd(3);
      lines.push(`ATOM  ${String(++serial).padStart(5)}  ${name} ${THREE[seq[i]] || "UNK"} A${String(i + 1).padStart(4)}    ${x}${y}${z}  1.00  0.00           ${BACKBONE[j][0]}`);
    }
  }
  return lines.join("\n") + "\nEND\n";
}
// activations: Float64Array over the whole sequence (NaN: not stored); scale: the feature's max
function residueColour(i) {
  const a = V.acts[i];
  return Number.isNaN(a) ? "#c8ccd2" : heatHex(a / V.scale);
}
async function showStructure(box, row, acts, scale, sticks) {
  const token = ++V.token;
  const lib = await loadViewer();
  if (token !== V.token || !box.isConnected) return;  // another view was asked for meanwhile
  V.row = row; V.acts = acts; V.scale = scale;
  box.replaceChildren();
  const v = lib.createViewer(box, {backgroundColor: "white", antialias: true});
  V.viewer = v;
  v.addModel(backbonePDB(row), "pdb");
  v.setStyle({}, {cartoon: {colorfunc: (atom) => residueColour(atom.resi - 1), thickness: 0.6}});
  if (sticks && sticks.length) {
    v.addStyle({resi: sticks.map((p) => p + 1)}, {stick: {radius: 0.35, colorscheme: "greenCarbon"},
      sphere: {radius: 0.7, color: "#1b9e77", opacity: 0.85}});
  }
  v.setHoverable({}, true, (atom) => hoverResidue(atom.resi - 1, true), () => hoverResidue(null, true));
  v.setHoverDuration(50);
  v.resize(); v.zoomTo(); v.zoom(1.4); v.render();
  box.dataset.row = String(row);
}
let hovered = null;
function hoverResidue(pos, fromViewer) {
  for (const s of document.querySelectorAll(`.strip span.hl`)) s.classList.remove("hl");
  if (V.viewer && hovered !== null) { V.viewer.removeAllLabels(); }
  hovered = pos;
  if (pos === null || V.row === null) { if (V.viewer) V.viewer.render(); return; }
  const pid = P.id[V.row];
  for (const s of document.querySelectorAll(`.protein[data-protein="${CSS.escape(pid)}"] .strip span[data-pos="${pos}"]`)) s.classList.add("hl");
  if (V.viewer) {
    const a = V.acts[pos];
    V.viewer.addLabel(`${P.seq[V.row][pos]}${pos + 1}${Number.isNaN(a) ? "" : ` ${a.toFixed(3)}`}`,
      {fontSize: 12, fontColor: "black", backgroundColor: "#fff4d6", backgroundOpacity: 0.9, inFront: true},
      {resi: pos + 1, atom: "CA"});
    V.viewer.render();
  }
}
// for tests: per residue (0-based) the colour the viewer gives the C-alpha atom, as hex
function viewerColours() {
  if (!V.viewer) return null;
  const out = {};
  for (const atom of V.viewer.getModel().selectedAtoms({atom: "CA"})) {
    out[atom.resi - 1] = window.$3Dmol.getColorFromStyle(atom, atom.style.cartoon).getHex();
  }
  return out;
}
// for tests: the residues (0-based, ascending) the viewer draws as sticks
function viewerSticks() {
  if (!V.viewer) return null;
  const out = new Set();
  for (const atom of V.viewer.getModel().selectedAtoms({})) if (atom.style && atom.style.stick) out.add(atom.resi - 1);
  return [...out].sort((a, b) => a - b);
}
