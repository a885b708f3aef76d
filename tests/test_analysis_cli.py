"""scripts/analyze.py end to end: umap and spatial on files (store, SAE, structures, FASTA)."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from interplm_jax.cli import load_script
from interplm_jax.analysis.tables import read_table
from interplm_jax.sae_dir import SavedSAE, load_sae, save_sae
from interplm_jax.store import write_store
from test_analysis_spatial import synthetic_activations
from test_analysis_structures import THREE, write_ca_pdb

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "analyze.py"


@pytest.fixture(scope="module")
def analyze():
    return load_script(SCRIPT).main


def _run(analyze, args):
    return CliRunner().invoke(analyze, [str(a) for a in args], catch_exceptions=False)


def _identity_sae(path, d=2):
    """ReLU SAE whose features are the (clipped) inputs: F = d."""
    eye = np.eye(d, dtype=np.float32)
    return save_sae(path, SavedSAE("relu", dict(
        b_pre=np.zeros(d, np.float32), W_enc=eye, b_enc=np.zeros(d, np.float32), W_dec=eye,
        scale=np.ones(d, np.float32))))


@pytest.fixture(scope="module")
def spatial_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("spatial")
    coords, acts = synthetic_activations(30, seed=0)
    rng = np.random.default_rng(0)
    letters = np.array(list(THREE))
    ids, seqs = [f"SYN{i}" for i in range(30)], {}
    (root / "af").mkdir()
    for pid in ids:
        seqs[pid] = "".join(rng.choice(letters, size=len(coords)))
        write_ca_pdb(root / "af" / f"AF-{pid}-F1-model_v4.pdb.gz", seqs[pid], coords)
    # one protein whose model misses its last residue, one without any structure
    for pid in ("BAD1", "NOST"):
        ids.append(pid)
        seqs[pid] = "".join(rng.choice(letters, size=len(coords)))
        acts.append(acts[0])
    write_ca_pdb(root / "af" / "BAD1.pdb", seqs["BAD1"][:-1], coords[:-1])
    (root / "seqs.fasta").write_text("".join(f">{p}\n{s}\n" for p, s in seqs.items()))
    write_store(root / "store", ids, {3: acts}, shard_size=8)
    return dict(sae=_identity_sae(root / "sae"), store=root / "store", structures=root / "af",
                fasta=root / "seqs.fasta", root=root)


def _spatial_args(inp, out, *extra):
    return ["spatial", "--sae", inp["sae"], "--store", inp["store"], "--layer", 3,
            "--structures", inp["structures"], "--fasta", inp["fasta"], "--out", out, *extra]


def test_spatial_command(analyze, spatial_inputs, tmp_path):
    res = _run(analyze, _spatial_args(spatial_inputs, tmp_path, "--interplm-dashboard"))
    assert res.exit_code == 0, res.output
    table = read_table(tmp_path / "spatial_layer3.tsv")
    assert table["tested"] == ["true", "true"]
    assert table["n_used"] == ["30", "30"]
    assert table["structural_only"] == ["true", "false"]
    assert table["seq_significant"] == ["false", "true"]
    report = read_table(tmp_path / "structures_layer3.tsv")
    status = dict(zip(report["protein"], report["status"]))
    reason = dict(zip(report["protein"], report["reason"]))
    assert sum(s == "used" for s in status.values()) == 30
    assert "89 residues in the structure, 90 in the sequence" in reason["BAD1"]
    assert reason["NOST"] == "no structure file"
    read = [f for f, s in zip(report["file"], report["status"]) if s == "used"]
    assert len(read) == 30 and all(Path(f).is_file() for f in read)
    assert (tmp_path / "spatial_layer3.png").read_bytes()[:4] == b"\x89PNG"
    ratio = float(table["struct_d"][0]) / abs(float(table["seq_d"][0]))
    assert float(table["struct_seq_ratio"][0]) == pytest.approx(ratio, rel=1e-5)
    dash = read_table(tmp_path / "Structure_feats.csv")  # InterPLM dashboard's columns
    assert dash["feat"] == ["0", "1"] and dash["structural_only"] == ["true", "false"]
    assert dash["structural_cohen"] == table["struct_d"]
    assert dash["sequential_cohen"] == table["seq_d"]

    # a rerun reuses the saved pair scores and gives the same table
    pairs = (tmp_path / "spatial_layer3_pairs.npz").read_bytes()
    first = (tmp_path / "spatial_layer3.tsv").read_text()
    assert _run(analyze, _spatial_args(spatial_inputs, tmp_path)).exit_code == 0
    assert (tmp_path / "spatial_layer3_pairs.npz").read_bytes() == pairs
    assert (tmp_path / "spatial_layer3.tsv").read_text() == first

    # too few proteins per feature: nothing tested, stated in the table
    res = _run(analyze, _spatial_args(spatial_inputs, tmp_path / "strict", "--min-proteins", 31))
    assert res.exit_code == 0, res.output
    assert read_table(tmp_path / "strict" / "spatial_layer3.tsv")["tested"] == ["false", "false"]


def test_spatial_bad_input_exits_2(analyze, spatial_inputs, tmp_path):
    res = _run(analyze, _spatial_args(spatial_inputs, tmp_path) + ["--layer", 5])
    assert res.exit_code == 2 and "layer 5 not stored" in res.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text("analysis:\n  spatial:\n    radius: -1\n")
    res = _run(analyze, _spatial_args(spatial_inputs, tmp_path, "--config", cfg))
    assert res.exit_code == 2 and "radius" in res.output


# --- UMAP + HDBSCAN -------------------------------------------------------------------------

N_GROUPS, PER_GROUP, D = 5, 30, 24


@pytest.fixture(scope="module")
def umap_run(analyze, tmp_path_factory):
    """One UMAP run (numba compiles once): an SAE directory whose decoder has 5 planted
    direction clusters (rows of random norms), with a concepts table and a spatial table."""
    root = tmp_path_factory.mktemp("umap")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(N_GROUPS, D))
    w_dec = np.concatenate([c + 0.25 * rng.normal(size=(PER_GROUP, D)) for c in centers])
    w_dec *= rng.uniform(0.2, 3.0, size=(len(w_dec), 1))  # norms must not matter
    F = len(w_dec)
    sae = save_sae(root / "sae", SavedSAE("relu", {
        "b_pre": np.zeros(D, np.float32), "W_enc": w_dec.T.astype(np.float32),
        "b_enc": np.zeros(F, np.float32), "W_dec": w_dec.astype(np.float32),
        "scale": np.ones(F, np.float32)}))
    concepts = root / "best.csv"
    concepts.write_text("feature,concept,f1\n" + "".join(
        f"{f},{'Helix' if f < PER_GROUP else 'Domain_X'},0.7\n" for f in range(0, F, 3)))
    ratios = root / "spatial_layer1.tsv"
    ratios.write_text("feature\tstruct_seq_ratio\n" + "".join(
        f"{f}\t{2.0 ** rng.normal():.4f}\n" for f in range(0, F, 2)) + f"{F - 1}\t\n")
    out = root / "out"
    res = _run(analyze, ["umap", "--sae", sae, "--out", out, "--concepts", concepts,
                         "--spatial", ratios, "--interplm-dashboard"])
    assert res.exit_code == 0, res.output
    return out


def test_umap_recovers_planted_clusters(umap_run):
    from sklearn.metrics import adjusted_rand_score

    table = read_table(umap_run / "feature_map.tsv")
    assert list(table) == ["feature", "x", "y", "cluster", "concept", "struct_seq_ratio"]
    cluster = np.array(table["cluster"], int)
    truth = np.repeat(np.arange(N_GROUPS), PER_GROUP)
    assert (cluster == -1).mean() < 0.1
    assert adjusted_rand_score(truth[cluster >= 0], cluster[cluster >= 0]) > 0.95
    assert len(set(cluster) - {-1}) == N_GROUPS
    xy = np.array([table["x"], table["y"]], float).T
    assert np.isfinite(xy).all()
    assert table["concept"][:3] == ["Helix", "", ""] and table["concept"][30] == "Domain_X"
    dash = read_table(umap_run / "UMAP.csv")  # InterPLM dashboard's columns, feature order
    assert list(dash) == ["UMAP 0", "UMAP 1", "cluster", "concept"]
    assert dash["UMAP 0"] == table["x"] and dash["cluster"] == table["cluster"]


def test_umap_figure_is_a_png(umap_run):
    import matplotlib.image

    img = matplotlib.image.imread(umap_run / "feature_map.png")
    assert img.ndim == 3 and img.shape[1] > 2 * img.shape[0]  # three panels side by side


def test_umap_is_seeded(umap_run):
    """Same input, same seed: the same map (umap-learn is deterministic with random_state)."""
    from interplm_jax.analysis.geometry import feature_map
    params = load_sae(umap_run.parent / "sae").params
    again = feature_map(params["W_dec"])
    table = read_table(umap_run / "feature_map.tsv")
    np.testing.assert_allclose(again.xy[:, 0], np.array(table["x"], float), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(again.cluster, np.array(table["cluster"], int))


def test_umap_bad_concepts_table_exits_2(analyze, umap_run, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("feature\tlabel\n0\tHelix\n")
    res = _run(analyze, ["umap", "--sae", umap_run.parent / "sae", "--out", tmp_path,
                         "--concepts", bad])
    assert res.exit_code == 2 and "missing column(s) ['concept']" in res.output
