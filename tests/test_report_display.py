"""Display details found by looking at the demo report's screenshot (docs/demo_report.png):
header alignment of text columns, missing heatmap cells, the run line, adapter labels."""

from __future__ import annotations

import numpy as np
from PIL import Image

from em_interp.report import figures
from em_interp.report.experiment import _run_state
from em_interp.report.html import Table, _html_table


def test_text_columns_have_left_aligned_headers_and_number_columns_right():
    t = Table(["question", "answer", "aligned", "label"],
              [["rent_due", "A long answer that wraps over more than thirty characters.", 15.5, "misaligned"],
               ["wish", None, None, "unscored"]])
    out = _html_table(t)
    assert '<th class="word">question</th>' in out and '<th class="word">answer</th>' in out
    assert "<th>aligned</th>" in out and '<th class="word">label</th>' in out


def test_heatmap_missing_cell_is_grey_with_a_dash_not_blank(tmp_path):
    path = figures.heatmap([[0.0, None], [50.0, 0.0]], tmp_path / "h.png", row_labels=["q1", "q2"],
                           col_labels=["base", "insecure"], title="t", xlabel="model", ylabel="question",
                           fmt=".0f", vmin=0.0)
    img = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    grey = np.all(np.abs(img.astype(int) - 0xE4) <= 2, axis=1)
    assert grey.sum() > 500  # the missing cell's face colour, not white page background


def test_run_line_while_the_report_stage_writes_the_page():
    stages = {"data": {"status": "done"}, "train": {"status": "done"}, "report": {"status": "running"}}
    assert _run_state({"stages": stages}) == "all stages done (this page is the last)"
    assert _run_state({"stages": {**stages, "train": {"status": "failed"}}}) == "not finished"
    assert _run_state({"finished": True, "stages": stages}) == "finished"
