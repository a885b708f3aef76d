"""Every script, given bad input or hit by a fault: exit status 2 (bad input) or 1 (fault), a
message naming the file / line / protein / key at fault, no traceback, and nothing half-written
(the output is unchanged, or still absent). Issue 13.

The scripts run in this process through click's CliRunner, as their command lines would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import re
import resource
import signal
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

from _saes import random_sae
from interplm_jax.cli import load_script
from interplm_jax.fasta import read_fasta
from interplm_jax.lock import locked
from interplm_jax.sae_dir import save_sae
from interplm_jax.store import write_store
from torch_bridge.esm import extract_to_store
from torch_bridge.export import interplm_state_dict
from torch_bridge.saelens import write_saelens

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (REPO / "scripts").glob("*.py"))

FASTA = ">P1\nMKTAYIAKQRQISFVK\n>P2\nACDEFGHIKLMNPQ\n>P3\nMKVLAAGWY\n"
UNIPROT_HEADER = "Entry\tProtein names\tLength\tSequence\tAlphaFoldDB\tHelix\n"


def uniprot_row(acc: str, seq: str) -> str:
    return f"{acc}\tprotein {acc}\t{len(seq)}\t{seq}\t{acc};\tHELIX 1..3\n"


#: Train options that must be refused before anything is written (issue 13 item 4):
#: name -> (override of a valid train: section, message). The store has d = 8, expansion 2: F = 16.
BAD_TRAIN_OPTIONS = {
    "grad-clip-negative": ({"grad_clip": -1}, r"grad_clip=-1(\.0)?: must be > 0"),
    "l1-negative": ({"grid": {"lr": [1e-3], "l1": [-0.1]}}, r"l1=-0.1 must be >= 0"),
    "resample-steps-0": ({"resample_steps": 0}, r"resample_steps=0: must be > 0"),
    "dead-tokens-negative": ({"dead_tokens": -5}, r"dead_tokens=-5: must be > 0"),
    "seed-negative": ({"seed": -1}, r"seed=-1: must be >= 0"),
    "warmup-negative": ({"warmup_steps": -1}, r"warmup_steps must be >= 0"),
    "topk-k-0": ({"arch": "topk", "grid": {"lr": [1e-3], "k": [0]}}, r"k=0 must be in \[1, F\]"),
    "topk-k-above-F": ({"arch": "topk", "grid": {"lr": [1e-3], "k": [17]}}, r"k=17"),
    "steps-absurd": ({"steps": 10**13}, r"steps=10000000000000: must be <="),
}
#: SAEs that an import must refuse (issue 13 item 13): name -> (the export.py option that
#: imports it, the file it names under the case's directory, how a valid ReLU SAE (d = 8, F = 16)
#: of that format is spoiled (:func:`spoiled_sae`), message).
BAD_IMPORTS = {
    "saelens-cfg-without-d_in": (
        "saelens", "", {"cfg": lambda c: {k: v for k, v in c.items() if k != "d_in"}},
        r"without-d_in/cfg\.json: missing key 'd_in'"),
    "saelens-cfg-d_in-not-a-number": (
        "saelens", "", {"cfg": lambda c: {**c, "d_in": "eight"}},
        r"not-a-number/cfg\.json: key 'd_in' is 'eight'; expected a positive integer"),
    "saelens-cfg-d_sae-0": ("saelens", "", {"cfg": lambda c: {**c, "d_sae": 0}},
                            r"d_sae-0/cfg\.json: key 'd_sae' is 0; expected a positive integer"),
    "saelens-cfg-a-list": ("saelens", "", {"cfg": lambda c: [8, 16]},
                           r"a-list/cfg\.json: holds a list; expected a JSON object"),
    "saelens-cfg-metadata-a-string": (
        "saelens", "", {"cfg": lambda c: {**c, "metadata": "esm2"}},
        r"a-string/cfg\.json: key 'metadata' holds a string; expected a JSON object"),
    "saelens-int-tensor": (
        "saelens", "", {"tensors": lambda t: {**t, "W_enc": t["W_enc"].astype(np.int32)}},
        r"int-tensor/sae_weights\.safetensors: key 'W_enc' holds int32 values; expected floating "
        r"point"),
    "native-sae-json-a-list": ("sae-dir", "", {"cfg": lambda c: ["relu"]},
                               r"a-list/sae\.json: holds a list; expected a JSON object"),
    "native-int-tensor": (
        "sae-dir", "", {"tensors": lambda t: {**t, "W_dec": t["W_dec"].astype(np.int32)}},
        r"native-int-tensor/params\.safetensors: key 'W_dec' holds int32 values; expected "
        r"floating point"),
    "native-F-0": (
        "sae-dir", "", {"cfg": lambda c: {**c, "n_features": 0}, "tensors": lambda t: {
            "b_pre": t["b_pre"], "W_enc": t["W_enc"][:, :0], "b_enc": t["b_enc"][:0],
            "W_dec": t["W_dec"][:0], "scale": t["scale"][:0]}},
        r"F-0/params\.safetensors: key 'W_enc' has shape \(8, 0\): an SAE needs d >= 1 and F >= 1"),
    "native-scale-negative": (
        "sae-dir", "", {"tensors": lambda t: {**t, "scale": -t["scale"]}},
        r"negative/params\.safetensors: key 'scale' is -\d\.\d+ for feature 2; expected >= 0"),
    "interplm-vector-normalize_to_sqrt_d": (
        "interplm", "/ae.pt", {"tensors": lambda t: {**t, "normalize_to_sqrt_d": torch.ones(2) > 0}},
        r"sqrt_d/ae\.pt: key 'normalize_to_sqrt_d' has shape \(2,\); expected \(\) \(a scalar\)"),
    "interplm-3d-encoder-weight": (
        "interplm", "/ae.pt", {"tensors": lambda t: {
            **t, "encoder.weight": t["encoder.weight"].reshape(1, 16, 8)}},
        r"weight/ae\.pt: key 'encoder\.weight' has shape \(1, 16, 8\); expected 2 dimensions "
        r"\(F, d\)"),
    "interplm-complex-tensor": (
        "interplm", "/ae.pt", {"tensors": lambda t: {
            **t, "decoder.weight": t["decoder.weight"].to(torch.complex64)}},
        r"complex-tensor/ae\.pt: key 'decoder\.weight' holds complex64 values; expected floating "
        r"point"),
    "interplm-int-tensor": (
        "interplm", "/ae.pt", {"tensors": lambda t: {**t, "encoder.bias": t["encoder.bias"].int()}},
        r"int-tensor/ae\.pt: key 'encoder\.bias' holds int32 values; expected floating point"),
    "interplm-F-0": (
        "interplm", "/ae.pt", {"tensors": lambda t: {
            **t, "encoder.weight": t["encoder.weight"][:0], "encoder.bias": t["encoder.bias"][:0],
            "decoder.weight": t["decoder.weight"][:, :0],
            "activation_rescale_factor": t["activation_rescale_factor"][:0]}},
        r"F-0/ae\.pt: key 'encoder\.weight' has shape \(0, 8\): an SAE needs d >= 1 and F >= 1"),
    "interplm-rescale-factor-negative": (
        "interplm", "/ae.pt", {"tensors": lambda t: {**t, "activation_rescale_factor": torch.where(
            torch.arange(16) == 3, -2.0, t["activation_rescale_factor"])}},
        r"negative/ae\.pt: key 'activation_rescale_factor' is -2\.0 for feature 3; expected >= 0"),
}
TRAIN = {"steps": 4, "batch_size": 8, "expansion": 2, "layers": [1]}


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad command line: ``argv`` with ``{name}`` placeholders for the files of the
    ``inputs`` fixture; ``out``: the placeholder of the output that must be left as it was."""

    id: str
    script: str
    argv: list[str]
    code: int
    message: str  # a regular expression the error message must match
    out: str | None = None
    hold: Callable[[dict], contextlib.AbstractContextManager] | None = None  # around the run


@contextlib.contextmanager
def file_size_limit(inputs: dict, n_bytes: int = 64):
    """A file-size limit (as ``ulimit -f``): a write past ``n_bytes`` fails with EFBIG."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the error, not the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def lock_held(name: str, what: str, where: str):
    """Hold the lock another process would hold on ``{where}``."""
    return lambda inputs: locked(Path(inputs[where]), name, what)


CASES = [
    # --- fasta.py: input files (item 11) and sampling (item 17)
    Case("fasta-truncated-gzip", "fasta", ["check", "{truncated_gz}"], 2,
         r"truncated\.fa\.gz: truncated gzip file"),
    Case("fasta-corrupted-gzip", "fasta", ["check", "{corrupted_gz}"], 2,
         r"corrupted\.fa\.gz: corrupted gzip data before its first line"),
    Case("fasta-latin1", "fasta", ["check", "{latin1_fa}"], 2,
         r"latin1\.fa:1: not UTF-8 text \(byte 0xe9"),
    Case("fasta-missing", "fasta", ["check", "{tmp}/nope.fa"], 2, r"nope\.fa: FASTA file not found"),
    Case("fasta-bad-residue", "fasta", ["check", "{bad_residue_fa}"], 2,
         r"bad\.fa:3: protein 'P2': invalid characters: '1'"),
    Case("sample-negative-n", "fasta", ["sample", "{good_fa}", "--n", "-1", "--out", "{new_out}"], 2,
         r"cannot sample -1 proteins", out="new_out"),
    Case("sample-too-many", "fasta", ["sample", "{good_fa}", "--n", "9", "--out", "{new_out}"], 2,
         r"cannot sample 9 proteins: only 3", out="new_out"),
    Case("sample-file-size-limit", "fasta",
         ["sample", "{big_fa}", "--n", "300", "--out", "{new_out}"], 1,
         r"File too large \(writing .*out-sample-file-size-limit\)", out="new_out",
         hold=file_size_limit),
    # --- extract.py
    Case("extract-layer-out-of-range", "extract",
         ["--fasta", "{good_fa}", "--model", "{tiny_esm}", "--layers", "9", "--out", "{new_out}"],
         2, r"layer", out="new_out"),
    Case("extract-bad-layers", "extract",
         ["--fasta", "{good_fa}", "--model", "{tiny_esm}", "--layers", "1,x", "--out", "{new_out}"],
         2, r"--layers: cannot parse '1,x'", out="new_out"),
    Case("extract-bad-worker", "extract",
         ["--fasta", "{good_fa}", "--model", "{tiny_esm}", "--layers", "1", "--worker", "2/2",
          "--out", "{new_out}"], 2, r"--worker: need 0 <= I < N, got '2/2'", out="new_out"),
    Case("extract-bad-fasta", "extract",
         ["--fasta", "{corrupted_gz}", "--model", "{tiny_esm}", "--layers", "1", "--out",
          "{new_out}"], 2, r"corrupted\.fa\.gz: corrupted gzip", out="new_out"),
    Case("extract-worker-already-running", "extract",
         ["--fasta", "{good_fa}", "--model", "{tiny_esm}", "--layers", "1", "--out", "{new_out}"],
         2, r"extraction worker 0/1 is already running here \(process \d+ on .*lock file",
         hold=lock_held(".lock-worker-0-of-1", "extraction worker 0/1", "new_out")),
    Case("extract-same-ids-other-residues", "extract",
         ["--fasta", "{other_residues_fa}", "--model", "{tiny_esm}", "--layers", "1", "--out",
          "{esm_store}"], 2, r"esm_store/: shard 0 \(proteins 0\.\.2, from 'P1'\) holds other "
         r"sequences under the same ids and lengths", out="esm_store"),
    *[Case(f"extract-shard-size-{n}", "extract",
           ["--fasta", "{good_fa}", "--model", "{tiny_esm}", "--layers", "1", "--shard-size", n,
            "--out", "{new_out}"], 2, r"shard.size", out="new_out") for n in ("0", "-5")],
    # --- inspect_store.py
    Case("inspect-store-not-a-store", "inspect_store", ["{tmp}/nostore"], 2,
         r"nostore: not an activation store"),
    Case("inspect-store-damaged-chunk", "inspect_store", ["{damaged_store}", "--verify"], 2,
         r"2 damaged layer shard\(s\):\n  layer 2, shard 0 \(proteins 0..1, rows 0..29\): cannot be "
         r"read: NOT_FOUND: .*layer_2/c/1/0.* is missing\n  layer 2, shard 1 \(proteins 2..2",
         out="damaged_store"),
    # --- train.py, plot_training.py
    Case("train-missing-store", "train",
         ["--config", "{train_yaml}", "--store", "{tmp}/nostore", "--out", "{new_out}"], 2,
         r"nostore", out="new_out"),
    Case("train-store-manifest-without-layers", "train",
         ["--config", "{train_yaml}", "--store", "{no_layers_store}", "--out", "{new_out}"], 2,
         r"no_layers: manifest\.json has no 'layers'; the store is damaged", out="new_out"),
    Case("train-store-truncated-chunk", "train",
         ["--config", "{train_yaml}", "--store", "{truncated_store}", "--out", "{new_out}"], 2,
         r"layer 1, rows 0\.\.29 \(shard 0, proteins 'P1'\.\.'P2'\): cannot be read",
         out="new_out"),
    Case("train-store-with-nan", "train",
         ["--config", "{train_yaml}", "--store", "{nan_store}", "--out", "{new_out}"], 2,
         r"layer 1 holds non-finite values \(NaN/Inf\) in 1 row\(s\) of shard 0, first row 19 "
         r"\(protein 'P2'\)", out="new_out"),
    Case("train-unknown-key", "train",
         ["--config", "{bad_key_yaml}", "--store", "{store}", "--out", "{new_out}"], 2,
         r"bad_key\.yaml.*stepz", out="new_out"),
    *[Case(f"train-{name}", "train", ["--config", f"{{tmp}}/train-{name}.yaml", "--store",
                                      "{store}", "--out", "{new_out}"], 2,
           rf"train-{name}\.yaml.*{message}", out="new_out")
      for name, (_, message) in BAD_TRAIN_OPTIONS.items()],
    Case("train-sweep-already-training", "train",
         ["--config", "{train_yaml}", "--store", "{store}", "--out", "{locked_runs}", "--resume"],
         2, r"layer_1: training is already running here \(process \d+ on .*lock file",
         out="locked_runs", hold=lock_held(".lock", "training", "locked_sweep")),
    Case("plot-not-a-sweep", "plot_training", ["--sweep", "{tmp}/nosweep"], 2, r"nosweep"),
    Case("plot-bad-metrics-line", "plot_training", ["--sweep", "{bad_sweep}"], 2,
         r"metrics\.jsonl:2: not a metrics line", out="bad_sweep"),
    # --- evaluate_concepts.py: UniProt inputs (items 11, 15), npz files (item 17)
    Case("labels-latin1", "evaluate_concepts", ["labels", "--tsv", "{latin1_tsv}", "--out",
                                                 "{new_out}/labels.npz"], 2,
         r"latin1\.tsv:3: not UTF-8 text", out="new_out"),
    Case("labels-residue-outside-alphabet", "evaluate_concepts",
         ["labels", "--tsv", "{bad_residue_tsv}", "--out", "{new_out}/labels.npz"], 2,
         r"bad\.tsv:3: protein 'Q2', column 'Sequence': invalid characters: 'J' \(first at "
         r"residue 4\)", out="new_out"),
    Case("labels-corrupted-gzip", "evaluate_concepts",
         ["labels", "--tsv", "{corrupted_tsv}", "--out", "{new_out}/labels.npz"], 2,
         r"corrupted\.tsv\.gz: (corrupted|truncated) gzip", out="new_out"),
    Case("split-labels-not-npz", "evaluate_concepts",
         ["split", "--labels", "{garbage_npz}", "--out", "{new_out}"], 2,
         r"garbage\.npz: cannot read .*\(not an \.npz file\)", out="new_out"),
    # --- annotate.py
    Case("annotate-metadata-latin1", "annotate",
         ["features", "--store", "{store}", "--layer", "1", "--sae", "{sae}", "--metadata",
          "{latin1_tsv}", "--out", "{new_out}", "--dry-run"], 2, r"latin1\.tsv:3: not UTF-8",
         out="new_out"),
    # --- normalize.py, export.py, analyze.py, report.py
    Case("normalize-missing-store", "normalize",
         ["--sae", "{sae}", "--store", "{tmp}/nostore"], 2, r"nostore", out="sae"),
    Case("export-missing-sae", "export",
         ["--sae-dir", "{tmp}/nosae", "--format", "interplm", "--out", "{new_out}"], 2, r"nosae",
         out="new_out"),
    *[Case(f"import-{name}", "export", [f"--{kind}", f"{{tmp}}/import-{name}{file}", "--format",
                                        "native", "--out", "{new_out}"], 2, message, out="new_out")
      for name, (kind, file, _, message) in BAD_IMPORTS.items()],
    Case("analyze-missing-sae", "analyze",
         ["umap", "--sae", "{tmp}/nosae", "--out", "{new_out}"], 2, r"nosae", out="new_out"),
    Case("report-layer-without-sweep", "report",
         ["--store", "{store}", "--fasta", "{good_fa}", "--out", "{new_out}", "--layer",
          "layer=1,sae={sae}"], 2, r"missing \['sweep'\]", out="new_out"),
    Case("bench-table-not-a-bench-table", "bench", ["table", "{good_fa}", "--out", "{new_out}"], 2,
         r"good\.fa:2: missing column", out="new_out"),
    # --- the torch scripts
    Case("steer-feature-out-of-range", "steer",
         ["--model", "{tiny_esm}", "--sae", "{sae}", "--layer", "1", "--feature", "999",
          "--value", "1", "--sequence", "MKTAYIAK", "--out", "{new_out}/t.tsv"], 2, r"999",
         out="new_out"),
    Case("steer-sae-of-another-width", "steer",
         ["--model", "{tiny_esm}", "--sae", "{sae}", "--layer", "1", "--feature", "5",
          "--value", "1", "--sequence", "MKTAYIAK", "--out", "{new_out}/t.tsv"], 2,
         r"the SAE reads vectors of width 8, but this esm2 model's layers have width 32",
         out="new_out"),
    Case("steer-residue-outside-alphabet", "steer",
         ["--model", "{tiny_esm}", "--sae", "{sae32}", "--layer", "1", "--feature", "5",
          "--value", "1", "--sequence", "MK1AYIAK", "--out", "{new_out}/t.tsv"], 2,
         r"sequence 'MK1AYIAK': invalid characters: '1' \(first at residue 3\)", out="new_out"),
    Case("explain-sae-of-another-width", "explain",
         ["--model", "{tiny_esm}", "--sae", "{sae}", "--layer", "1", "--sequence", "MKTAYIAK",
          "--out", "{new_out}"], 2, r"sae: SAE width 8 != .*tiny-esm2 hidden size 32",
         out="new_out"),
    Case("fidelity-layer-out-of-range", "fidelity",
         ["--model", "{tiny_esm}", "--fasta", "{good_fa}", "--sae", "{sae32}", "--layer", "9",
          "--out", "{new_out}/f.tsv"], 2, r"layer 9 is out of range: this esm2 model has layers 1\.\.4",
         out="new_out"),
    Case("fidelity-sae-of-another-width", "fidelity",
         ["--model", "{tiny_esm}", "--fasta", "{good_fa}", "--sae", "{sae}", "--layer", "1",
          "--out", "{new_out}/f.tsv"], 2, r"the SAE reads vectors of width 8", out="new_out"),
    Case("fidelity-latin1-fasta", "fidelity",
         ["--model", "{tiny_esm}", "--fasta", "{latin1_fa}", "--sae", "{sae}", "--layer", "1",
          "--out", "{new_out}/f.tsv"], 2, r"latin1\.fa:1: not UTF-8", out="new_out"),
    Case("shuffle-missing-model", "shuffle_esm", ["--model", "{tmp}/nomodel", "--out",
                                                  "{new_out}"], 2, r"nomodel", out="new_out"),
    # --- pipeline.py
    Case("pipeline-unknown-section-key", "pipeline",
         ["--config", "{bad_study_yaml}", "--out", "{new_out}", "--plan"], 2,
         r"bad_study\.yaml.*stepz", out="new_out"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_esm) -> dict:
    tmp = tmp_path_factory.mktemp("bad_input")
    files = {"tmp": tmp, "tiny_esm": tiny_esm}

    def put(name: str, data: bytes | str) -> Path:
        path = tmp / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    gz = gzip.compress(FASTA.encode() * 40)
    files["good_fa"] = put("good.fa", FASTA)
    files["other_residues_fa"] = put("other.fa", FASTA.replace("ISFVK", "ISFVW"))  # same ids
    files["esm_store"] = tmp / "esm_store"
    extract_to_store(read_fasta(files["good_fa"])[0], tiny_esm, [1], files["esm_store"])
    files["big_fa"] = put("big.fa", "".join(f">P{i}\nMKTAYIAKQRQISFVK\n" for i in range(300)))
    files["truncated_gz"] = put("truncated.fa.gz", gz[: len(gz) // 2])
    files["corrupted_gz"] = put("corrupted.fa.gz", gz[:12] + b"\xff" * 16 + gz[28:])
    files["latin1_fa"] = put("latin1.fa", ">P1 prot\u00e9ine\nMKV\n".encode("latin-1"))
    files["bad_residue_fa"] = put("bad.fa", ">P1\nMKV\n>P2\nMK1V\n")
    tsv = UNIPROT_HEADER + uniprot_row("Q1", "MKTAYIAK")
    files["latin1_tsv"] = put("latin1.tsv", (tsv + "Q2\tprot\u00e9ine\t3\tMKV\tQ2;\t\n").encode("latin-1"))
    files["bad_residue_tsv"] = put("bad.tsv", tsv + uniprot_row("Q2", "MKVJAK"))
    files["corrupted_tsv"] = put("corrupted.tsv.gz", gzip.compress(tsv.encode())[:-8] + b"\0" * 8)
    files["garbage_npz"] = put("garbage.npz", "not an npz archive")
    files["bad_key_yaml"] = put("bad_key.yaml", "train:\n  stepz: 3\n")
    files["bad_study_yaml"] = put("bad_study.yaml", (REPO / "configs" / "demo.yaml").read_text()
                                  .replace("  steps: 300\n", "  stepz: 300\n")
                                  .replace("../data/", f"{REPO}/data/"))
    for name, (override, _) in BAD_TRAIN_OPTIONS.items():
        put(f"train-{name}.yaml", yaml.safe_dump({"train": {**TRAIN, **override}}))
    files["train_yaml"] = put("train.yaml", "train:\n  steps: 4\n  batch_size: 8\n"
                                            "  expansion: 2\n  layers: [1]\n")

    rng = np.random.default_rng(0)
    lengths = [16, 14, 9]
    acts = {L: [rng.normal(size=(n, 8)).astype(np.float32) for n in lengths] for L in (1, 2)}
    files["store"] = write_store(tmp / "store", ["P1", "P2", "P3"], acts, shard_size=2).url
    damaged = write_store(tmp / "damaged", ["P1", "P2", "P3"], acts, shard_size=2, chunk_rows=16)
    (tmp / "damaged" / "layer_2" / "c" / "1" / "0").unlink()  # rows 16..31: proteins P2, P3
    files["damaged_store"] = damaged.url
    write_store(tmp / "no_layers", ["P1", "P2", "P3"], acts, shard_size=2)
    manifest = json.loads((tmp / "no_layers" / "manifest.json").read_text())
    del manifest["layers"]
    (tmp / "no_layers" / "manifest.json").write_text(json.dumps(manifest))
    files["no_layers_store"] = tmp / "no_layers"
    files["truncated_store"] = write_store(tmp / "truncated", ["P1", "P2", "P3"], acts,
                                           shard_size=2).url
    chunk = tmp / "truncated" / "layer_1" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    nan = {L: [a.copy() for a in acts[L]] for L in acts}
    nan[1][1][3, 2] = np.nan  # row 16 + 3 of layer 1: protein P2
    files["nan_store"] = write_store(tmp / "nan_store", ["P1", "P2", "P3"], nan, shard_size=2).url
    files["sae"] = save_sae(tmp / "sae", random_sae("relu", d=8, F=16))  # of the store's width
    files["sae32"] = save_sae(tmp / "sae32", random_sae("relu", d=32, F=64))  # tiny ESM-2's

    for name, (kind, _, spoil, _) in BAD_IMPORTS.items():
        spoiled_sae(tmp / f"import-{name}", kind, **spoil)

    sweep = tmp / "sweep"
    sweep.mkdir()
    (sweep / "grid.json").write_text(json.dumps([{"id": "sae000", "arch": "relu", "lr": 1e-3}]))
    line = {"step": 1, "tokens": 8, "sae": "sae000", "loss": 1.0}
    (sweep / "metrics.jsonl").write_text(json.dumps(line) + "\n{oops\n" + json.dumps(line) + "\n")
    files["bad_sweep"] = sweep
    files["locked_runs"] = tmp / "runs"
    files["locked_sweep"] = tmp / "runs" / "layer_1"  # of a run going on
    (tmp / "runs" / "layer_1").mkdir(parents=True)
    (tmp / "runs" / "layer_1" / "config.yaml").write_text("train: {}\n")
    return {k: str(v) for k, v in files.items()}


def spoiled_sae(path: Path, kind: str, cfg=None, tensors=None) -> None:
    """Write a valid ReLU SAE (d = 8, F = 16) to the directory ``path`` in the format ``kind``
    (interplm: ae.pt; saelens; sae-dir: ours), then replace its JSON file (cfg.json, sae.json)
    by ``cfg(json)`` and its tensors by ``tensors(tensors)``."""
    sae = random_sae("relu", d=8, F=16)
    if kind == "interplm":
        path.mkdir()
        torch.save(tensors(interplm_state_dict(sae)), path / "ae.pt")
        return
    if kind == "saelens":
        write_saelens(sae, path)
        json_file, weights = path / "cfg.json", path / "sae_weights.safetensors"
    else:
        save_sae(path, sae)
        json_file, weights = path / "sae.json", path / "params.safetensors"
    if cfg:
        json_file.write_text(json.dumps(cfg(json.loads(json_file.read_text()))))
    if tensors:
        save_file(tensors(load_file(weights)), weights)


def entry(script: str):
    """The click command of ``scripts/<script>.py``."""
    module = load_script(REPO / "scripts" / f"{script}.py")
    return getattr(module, "main", None) or module.cli


def snapshot(path: str | None) -> dict[str, bytes] | None:
    """Every file under ``path`` (None when absent)."""
    if path is None or not Path(path).exists():
        return None
    root = Path(path)
    if root.is_file():
        return {"": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_named_error_and_leaves_the_output_alone(case, inputs):
    inputs = {**inputs, "new_out": f"{inputs['tmp']}/out-{case.id}"}  # absent, this case's own
    argv = [a.format(**inputs) for a in case.argv]
    out = inputs[case.out] if case.out else None
    before = snapshot(out)
    hold = case.hold(inputs) if case.hold else contextlib.nullcontext()
    with hold:
        result = CliRunner().invoke(entry(case.script), argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{case.id}: uncaught {type(result.exception).__name__}") \
            from result.exception
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    assert re.search(case.message, result.stderr), result.stderr
    assert snapshot(out) == before, f"{case.id}: {out} changed"
    if case.out == "new_out":
        assert not Path(out).exists()


def test_every_script_has_a_case():
    assert {c.script for c in CASES} == set(SCRIPTS)


def test_help_shows_what_the_user_types():
    """Click prints help text as written: no printf-style '%%' (issue 13 item 17)."""
    result = CliRunner().invoke(entry("extract"), ["--help"])
    assert result.exit_code == 0 and "%%" not in result.output
    assert "s % N == I" in " ".join(result.output.split())
