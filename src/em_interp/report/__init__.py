"""Reports: layer-wise base-vs-finetuned diff reports, experiment reports, and the shared
figure (matplotlib PNG) and HTML/Markdown writers other packages use."""

from em_interp.report import figures
from em_interp.report.diff import DiffResult, compute_diff, diff_report, direction_vectors
from em_interp.report.errors import ReportError
from em_interp.report.experiment import experiment_report
from em_interp.report.html import (Details, Section, Table, fmt, render_html, render_markdown, write_html_report,
                                   write_markdown_report)
from em_interp.report.lora_norms import adapter_delta_norms, lora_delta_norms
from em_interp.report.texts import load_texts

__all__ = [
    "Details", "DiffResult", "ReportError", "Section", "Table", "adapter_delta_norms", "compute_diff", "diff_report",
    "direction_vectors", "experiment_report", "figures", "fmt", "load_texts", "lora_delta_norms", "render_html", "render_markdown",
    "write_html_report", "write_markdown_report",
]
