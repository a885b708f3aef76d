"""The protein SAE bench: every SAE of every grid measured on the held-out proteins.

- :mod:`~interplm_jax.bench.grid`: one pass over a split for G stacked SAEs: reconstruction
  statistics (L0, FVE, dead and dense fractions) and concept counts per SAE.
- :mod:`~interplm_jax.bench.table`: ``bench.csv`` rows and the Pareto plots.
- :mod:`~interplm_jax.bench.probes`: sparse probing (k best features, neurons, hidden state).
- :mod:`~interplm_jax.bench.guards`: small-study warnings.
- :mod:`~interplm_jax.bench.causal`: the causal test's inputs (concept sites, frequency-matched
  null features) and statistics (permutation p, z, BH q); the interventions are in
  ``torch_bridge/causal.py``.
- :mod:`~interplm_jax.bench.run`: the steps of ``scripts/bench.py`` and the pipeline's stage.

Loss recovered comes from ``torch_bridge/fidelity.py`` (``scripts/fidelity.py``); the
pipeline's ``bench`` stage runs it and joins its table in.
"""

from interplm_jax.bench.grid import DENSE_FRACTION, GridFeatures, GridMeasure, ReconStats, measure_grid, stack_saes
from interplm_jax.bench.table import METRICS, grid_rows, plot_all, read_table, write_table

__all__ = ["DENSE_FRACTION", "METRICS", "GridFeatures", "GridMeasure", "ReconStats", "grid_rows",
           "measure_grid", "plot_all", "read_table", "stack_saes", "write_table"]
