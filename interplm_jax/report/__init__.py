"""A static, self-contained HTML feature browser of a study (``scripts/report.py``;
``docs/report.md``)."""

from interplm_jax.report.build import LayerInputs, build_report, render_html, report_data
from interplm_jax.report.config import ReportConfig

__all__ = ["LayerInputs", "ReportConfig", "build_report", "render_html", "report_data"]
