"""The bundled demo structures (data/demo/alphafold) and the configs' analysis sections."""

from pathlib import Path

import numpy as np
import pytest

from interplm_jax.analysis.config import AnalysisConfig
from interplm_jax.analysis.run import run_spatial
from interplm_jax.analysis.tables import read_table
from interplm_jax.config import load_yaml
from interplm_jax.fasta import read_fasta
from interplm_jax.sae_dir import SavedSAE, save_sae
from interplm_jax.store import write_store

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["demo", "esm2_8m", "esm2_650m", "esmc_300m"])
def test_configs_have_a_valid_analysis_section(name):
    cfg = load_yaml(AnalysisConfig, REPO / "configs" / f"{name}.yaml", "analysis")
    assert cfg.umap.n_neighbors == 15 and cfg.spatial.radius == 6.0
    assert cfg.spatial.min_proteins == (2 if name == "demo" else 25)


def test_spatial_on_the_demo_structures(demo_data, tmp_path):
    folder = demo_data / "alphafold"
    proteins, _ = read_fasta(folder / "sequences.fasta")
    assert [p.id for p in proteins] == ["O15552", "Q7Z6M3"]
    rng = np.random.default_rng(0)
    d = 4
    acts = [rng.uniform(size=(len(p.sequence), d)).astype(np.float32) ** 3 for p in proteins]
    store = write_store(tmp_path / "store", [p.id for p in proteins], {1: acts})
    eye = np.eye(d, dtype=np.float32)
    save_sae(tmp_path / "sae", SavedSAE("relu", dict(b_pre=np.zeros(d, np.float32), W_enc=eye,
             b_enc=np.zeros(d, np.float32), W_dec=eye, scale=np.ones(d, np.float32))))
    cfg = load_yaml(AnalysisConfig, REPO / "configs" / "demo.yaml", "analysis").spatial
    paths = run_spatial(tmp_path / "sae", store.url, 1, folder, folder / "sequences.fasta",
                        tmp_path / "out", cfg)
    report = read_table(paths["structures"])
    assert report["status"] == ["used", "used"]
    table = read_table(paths["table"])
    assert table["tested"] == ["true"] * d and table["n_used"] == ["2"] * d
    # recompute feature 0's structural score on O15552 by hand from the model's coordinates
    from interplm_jax.analysis.structures import read_ca

    ca = read_ca(folder / "O15552.cif.gz").ca
    a = acts[0][:, 0].astype(np.float64)
    pos = int(a.argmax())
    near = [j for j in range(len(a)) if j != pos and np.linalg.norm(ca[j] - ca[pos]) <= 6.0]
    with np.load(paths["pairs"]) as z:
        e = np.flatnonzero((z["protein"] == 0) & (z["feature"] == 0))[0]
        assert z["pos_max"][e] == pos
        assert z["struct_obs"][e] == pytest.approx(a[near].mean(), rel=1e-6)
