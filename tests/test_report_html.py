"""Figure functions, the HTML / Markdown writers, and rendering in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from em_interp.report import ReportError, Section, Table, figures, fmt, write_html_report, write_markdown_report


def _png(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert img.std() > 0.02  # not blank
    return img


def test_every_figure_function_draws(tmp_path):
    paths = [
        figures.layer_plot({"a": [1.0, 2.0, None, 4.0], "b": [0.5, 0.4, 0.3, 0.2]}, tmp_path / "l.png",
                           title="t", ylabel="y (units)"),
        figures.heatmap([[0.1, None], [0.3, 0.4]], tmp_path / "h.png", row_labels=["r0", "r1"],
                        col_labels=["c0", "c1"], title="h", xlabel="x", ylabel="y", cbar_label="cos"),
        figures.steering_curves({"2": {"alpha": [4, 0, 8], "share": [0.2, 0.0, 0.5], "lo": [0.1, 0, 0.4],
                                       "hi": [0.3, 0.05, 0.6]}, "3": {"alpha": [0, 4], "share": [0.0, 0.1]}},
                                tmp_path / "s.png"),
        figures.ablation_bars(["none", "direction", "random direction 0"], [0.2, 0.02, 0.18], tmp_path / "a.png",
                              lo=[0.1, 0.0, 0.1], hi=[0.3, 0.05, 0.3]),
        figures.bar_ci(["en", "zh"], [0.1, 0.3], tmp_path / "b.png", title="b", ylabel="share (%)", percent=True),
        figures.probe_accuracy([0, 1, 2], {"probe": [0.5, 0.8, 0.9]}, tmp_path / "p.png"),
        figures.training_dynamics([1, 2, 3], tmp_path / "d.png", em_rate=[0.0, 0.1, 0.2], projection=[0.1, 0.5, 1.0],
                                  loss_steps=[1, 2, 3, 4], loss=[3.0, 2.0, 1.5, 1.2]),
    ]
    for p in paths:
        assert p.suffix == ".png" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        _png(p)


def test_share_figures_never_show_a_negative_axis_and_draw_coherence(tmp_path, monkeypatch):
    seen = []
    real_save = figures._save

    def spy(fig, path):
        seen.append([(ax.get_ylabel(), ax.get_ylim()) for ax in fig.axes])
        return real_save(fig, path)

    monkeypatch.setattr(figures, "_save", spy)
    figures.ablation_bars(["no ablation", "ablate direction", "random direction 0"], [0.0, 0.0, 0.0],
                          tmp_path / "a.png", lo=[0, 0, 0], hi=[0, 0, 0], coherent=[0.8, 0.3, 0.75],
                          coherent_lo=[0.6, 0.1, 0.5], coherent_hi=[0.95, 0.5, 0.9])
    figures.steering_curves({"1": {"alpha": [0, 4], "share": [0.0, 0.0], "lo": [0, 0], "hi": [0, 0],
                                   "coherent": [0.5, 0.2]}}, tmp_path / "s.png")
    figures.line_plot([0, 1], {"share": [0.0, 0.0]}, tmp_path / "l.png", title="t", xlabel="x", ylabel="%",
                      percent=True)
    for axes in seen:
        for _, (bottom, top) in axes:
            assert bottom == 0 and top >= 10  # all-zero shares: 0..10 %, not -0.05..0.05
    assert [label for label, _ in seen[0]] == ["misaligned share (%)", "coherent share (%)"]
    assert [label for label, _ in seen[1]] == ["misaligned share (%)", "coherent share (%)"]
    assert seen[0][1][1][1] >= 95  # the coherent CI (up to 95 %) is in view
    _png(figures.lora_norms([{"layer": L, "module": m, "delta_norm": 0.1 * L + (m == "mlp.down_proj")}
                             for L in range(4) for m in ("self_attn.q_proj", "mlp.down_proj")], tmp_path / "n.png"))
    _png(figures.probe_accuracy([0, 1, 2], {"acc": [0.4, 0.7, 0.9]}, tmp_path / "p.png",
                                std={"acc": [0.05, 0.1, 0.02]}))


def test_figure_inputs_are_checked(tmp_path):
    with pytest.raises(ReportError, match="series 'a' has 2 values, expected 3"):
        figures.line_plot([0, 1, 2], {"a": [1, 2]}, tmp_path / "x.png", title="t", xlabel="x", ylabel="y")
    with pytest.raises(ReportError, match=r"matrix shape \(1, 2\) does not match 2 row labels"):
        figures.heatmap([[1, 2]], tmp_path / "x.png", row_labels=["a", "b"], col_labels=["c", "d"], title="t",
                        xlabel="x", ylabel="y")
    with pytest.raises(ReportError, match="nothing to plot"):
        figures.training_dynamics([1], tmp_path / "x.png")


def test_fmt_is_shared_by_both_writers():
    assert fmt(None) == "–" and fmt(3) == "3" and fmt(0.123456) == "0.1235" and fmt(1234.5678) == "1235"
    assert fmt(1.5e-5) == "1.500e-05" and fmt(0.0) == "0" and fmt(float("nan")) == "nan" and fmt(True) == "True"


def test_writers_share_numbers_and_escape(tmp_path):
    fig = figures.bar_ci(["x"], [0.5], tmp_path / "figures" / "f.png", title="t", ylabel="y")
    sections = [Section("Numbers <b>", text="First para.\n\nSecond <i>para</i>.", figures=[fig],
                        tables=[Table(["name", "‖Δ‖", "a|b"], [["<script>", 0.123456, None]], caption="T")],
                        pre="key: value\n")]
    html = write_html_report("Title & co", sections, tmp_path, json_link="raw.json").read_text()
    md = write_markdown_report("Title & co", sections, tmp_path, json_link="raw.json").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html and "Numbers &lt;b&gt;" in html
    assert html.count("<p>") == 2 and 'href="raw.json"' in html and "<pre>key: value\n</pre>" in html
    assert html.count('src="data:image/png;base64,') == 1
    assert "| name | ‖Δ‖ | a\\|b |" in md and "| <script> | 0.1235 | – |" in md
    assert "![f](figures/f.png)" in md and "```\nkey: value\n```" in md
    long = write_html_report("t", [Section(f"S{i}") for i in range(3)] + [Section("Config", pre="k: v\n" * 40)],
                             tmp_path, name="long.html").read_text()
    assert '<a href="#s3-config">Config</a>' in long and '<section id="s3-config">' in long
    assert "<details><summary>show (41 lines)</summary><pre>" in long
    with pytest.raises(ReportError, match="row 0 has 1 cells, expected 2"):
        Table(["a", "b"], [[1]])
    with pytest.raises(ReportError, match="figure file not found"):
        write_html_report("t", [Section("s", figures=[tmp_path / "missing.png"])], tmp_path)


# ----------------------------------------------------------------------------- headless Chromium

_CHECK = """<script>
window.addEventListener('load', function () {
  var out = [];
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    out.push(im.complete + ':' + im.naturalWidth + 'x' + im.naturalHeight);
  }
  var d = document.createElement('pre'); d.id = 'render-check'; d.textContent = out.join(' ');
  document.body.appendChild(d);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _chromium_args(tmp_path: Path) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chr'}"]


def rendered_images(html_path: Path, tmp_path: Path) -> list[tuple[bool, int, int]]:
    """(complete, naturalWidth, naturalHeight) of every <img> once Chromium has loaded the page.

    The page is copied with a tiny script that writes these into the DOM, then dumped."""
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"), encoding="utf-8")
    out = subprocess.run(_chromium_args(tmp_path) + ["--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120)
    m = re.search(r'<pre id="render-check">([^<]*)</pre>', out.stdout)
    assert m, f"chromium did not run the check script: {out.stderr[-500:]}"
    rows = []
    for item in m.group(1).split():
        complete, size = item.split(":")
        w, h = size.split("x")
        rows.append((complete == "true", int(w), int(h)))
    return rows


def screenshot(html_path: Path, tmp_path: Path, size: str = "1200,2400") -> np.ndarray:
    shot = tmp_path / "shot.png"
    subprocess.run(_chromium_args(tmp_path) + [f"--screenshot={shot}", f"--window-size={size}",
                                               "--hide-scrollbars", html_path.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    return _png(shot)


def test_diff_report_renders_in_chromium(tiny_lm, tmp_path):
    from em_interp.report import diff_report
    from test_report_diff import TEXTS, make_lora_copy

    paths = diff_report(tiny_lm, make_lora_copy(tiny_lm), TEXTS[:2], tmp_path / "out")
    imgs = rendered_images(paths["html"], tmp_path)
    assert len(imgs) == 6
    assert all(complete and w > 300 and h > 200 for complete, w, h in imgs)
    img = screenshot(paths["html"], tmp_path)
    # the page is not blank: plenty of non-white pixels (figures, tables, text)
    assert (img[..., :3].mean(axis=2) < 0.9).mean() > 0.02


def test_experiment_report_renders_in_chromium(tmp_path):
    from em_interp.report import experiment_report
    from test_report_experiment import make_run_dir

    paths = experiment_report(make_run_dir(tmp_path))
    imgs = rendered_images(paths["html"], tmp_path)
    assert len(imgs) == 10 and all(c and w > 300 and h > 200 for c, w, h in imgs)
