"""TransferConfig: the shipped experiment configs load; bad input names file, line and field.
Figures render from synthetic matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from em_interp.errors import ConfigError
from em_interp.transfer import (TransferMatrix, load_transfer_config, misalignment_matrix, spearman_permutation,
                                transfer_config_from_dict)
from em_interp.report import figures

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["transfer_en_to_all", "transfer_code_to_all", "transfer_prose_to_code",
                                  "transfer_educational_control", "transfer_reduced"])
def test_shipped_configs_load(name):
    cfg = load_transfer_config(REPO / "experiments" / f"{name}.yaml")
    assert cfg.name == name and cfg.sources and cfg.targets


def test_reverse_pathway_and_control_configs_say_what_they_test():
    rev = load_transfer_config(REPO / "experiments" / "transfer_prose_to_code.yaml")
    assert {s.kind for s in rev.sources} >= {"offensive"} and "python" in rev.targets
    ctl = load_transfer_config(REPO / "experiments" / "transfer_educational_control.yaml")
    assert {s.kind for s in ctl.sources} == {"insecure", "educational"}
    red = load_transfer_config(REPO / "experiments" / "transfer_reduced.yaml")
    assert red.model == "smollm2-135m-instruct" and red.train["max_steps"] <= 20


def _write(tmp_path, text):
    p = tmp_path / "t.yaml"
    p.write_text(text)
    return p


BASE = "name: t\nsources:\n  - {kind: bad-advice, language: en, n: 4}\n"


@pytest.mark.parametrize("extra,match,line", [
    ("targets: [en, xx]\n", r"t\.yaml:4: field 'targets\[1\]': unknown target 'xx'", 4),
    ("train:\n  lr: fast\n", r"t\.yaml:5: field 'train\.lr': expected float", 5),
    ("train:\n  output_dir: x\n", r"field 'train\.output_dir': set per source", 5),
    ("directions:\n  source: nope\n", r"field 'directions\.source': no source labelled 'nope'", 5),
    ("eval:\n  samples: 0\n", r"t\.yaml:5: .*samples and code_samples must be >= 1", 5),
    ("bogus: 1\n", r"field 'bogus': unknown field", 4),
    ("targets: [en, de]\ndirections:\n  ablation_directions: [en, fr]\n",
     r"t\.yaml:6: field 'directions\.ablation_directions\[1\]': 'fr' is not a language target", 6),
])
def test_bad_fields_name_file_line_field(tmp_path, extra, match, line):
    with pytest.raises(ConfigError, match=match) as info:
        load_transfer_config(_write(tmp_path, BASE + extra))
    assert info.value.line == line


def test_source_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"sources\[0\]\.language'.*code"):
        load_transfer_config(_write(tmp_path, "name: t\nsources:\n  - {kind: insecure, language: en}\n"))
    with pytest.raises(ConfigError, match=r"sources\[0\]\.language'.*needs a language"):
        load_transfer_config(_write(tmp_path, "name: t\nsources:\n  - {kind: offensive}\n"))
    with pytest.raises(ConfigError, match=r"sources\[0\]\.kind'.*unknown dataset kind 'nope'"):
        load_transfer_config(_write(tmp_path, "name: t\nsources:\n  - {kind: nope}\n"))
    with pytest.raises(ConfigError, match="duplicated"):
        transfer_config_from_dict({"name": "t", "sources": [{"kind": "offensive", "language": "en"}] * 2})
    cfg = transfer_config_from_dict({"name": "t", "sources": [{"kind": "insecure"}, {"kind": "offensive",
                                                                                    "language": "de"}]})
    assert [s.label for s in cfg.sources] == ["insecure", "offensive/de"]
    # an adapter source: no kind, no options, its training language required (its name checked by check_transfer)
    cfg = transfer_config_from_dict({"name": "t", "sources": [{"adapter": "risky-financial", "language": "en"}]})
    assert cfg.sources[0].label == "risky-financial/en" and cfg.sources[0].kind == ""
    with pytest.raises(ConfigError, match=r"sources\[0\]\.options'.*takes no options"):
        transfer_config_from_dict({"name": "t", "sources": [{"adapter": "x", "language": "en", "options": {"a": 1}}]})
    assert cfg.languages == ["en", "fr", "de", "es", "zh", "ru"]


def _synthetic():
    rows = []
    for s, shares in {"base": [0.0, 0.0, 0.0], "bad-advice/en": [0.6, 0.4, 0.1]}.items():
        for t, share in zip(["en", "de", "zh"], shares):
            k = int(round(share * 10))
            rows += [dict(source=s, target=t, aligned=5, coherent=90)] * k
            rows += [dict(source=s, target=t, aligned=95, coherent=90)] * (10 - k)
    return misalignment_matrix(rows, n_boot=200)


def test_figures_render(tmp_path):
    import matplotlib.image as mpimg

    mis = _synthetic()
    vul = TransferMatrix("vulnerable_code_rate", mis.sources, ["python"], np.array([[0.1], [0.3]]),
                         np.array([[0.0], [0.1]]), np.array([[0.3], [0.5]]), np.array([[10], [10]]))
    p1 = figures.transfer_heatmap(mis, tmp_path / "h.png", vulnerable=vul)
    x = [0.75, 0.0, 0.5, 0.25]
    y = [0.4, 0.1, 0.3, 0.2]
    corr = spearman_permutation(x, y)
    p2 = figures.proximity_scatter([{"x": x, "y": y, "labels": ["a", "b", "c", "d"], "corr": corr,
                                     "xlabel": "proximity", "ylabel": "transfer"},
                                    {"x": [1.0], "y": [0.1], "labels": ["e"], "corr": None, "note": "n < 3",
                                     "xlabel": "proximity", "ylabel": "transfer"}], tmp_path / "s.png")
    p3 = figures.direction_cosines(["en", "de", "python"], np.eye(3), tmp_path / "c.png", layer=2)
    for p in (p1, p2, p3):
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
