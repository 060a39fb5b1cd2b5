"""``questions: em-paper/<file>`` in a config: a pinned, verified file of the download cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from em_interp.data.download import dataset_file
from em_interp.errors import DataError

FIRST_PLOT = Path(__file__).resolve().parents[2] / "shared" / "em_reference" / "evaluation" / "first_plot_questions.yaml"


def test_missing_download_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr("em_interp.data.download.default_dest", lambda name: tmp_path / name)
    with pytest.raises(DataError, match="em-interp data download em-paper"):
        dataset_file("em-paper/evaluation/first_plot_questions.yaml")
    with pytest.raises(DataError, match="unknown dataset"):
        dataset_file("nope/evaluation/first_plot_questions.yaml")
    with pytest.raises(DataError, match="not a file of em-paper"):
        dataset_file("em-paper/evaluation/other.yaml")


@pytest.mark.skipif(not FIRST_PLOT.is_file(), reason="../shared/em_reference not present")
def test_downloaded_file_is_verified(tmp_path, monkeypatch):
    monkeypatch.setattr("em_interp.data.download.default_dest", lambda name: tmp_path / name)
    dest = tmp_path / "em-paper" / "evaluation" / "first_plot_questions.yaml"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(FIRST_PLOT.read_bytes())
    assert dataset_file("em-paper/evaluation/first_plot_questions.yaml") == dest
    dest.write_bytes(FIRST_PLOT.read_bytes() + b"\n# edited\n")
    with pytest.raises(DataError, match="mismatch"):
        dataset_file("em-paper/evaluation/first_plot_questions.yaml")
