"""A static, self-contained HTML feature browser of a study (``scripts/report.py``;
``docs/report.md``)."""

from interplm_jax.report.build import (LayerInputs, build_report, page_data, render_html,
                                       report_data)
from interplm_jax.report.config import ReportConfig
from interplm_jax.report.structures import StructureInputs

__all__ = ["LayerInputs", "ReportConfig", "StructureInputs", "build_report", "page_data",
           "render_html", "report_data"]
