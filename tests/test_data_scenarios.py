"""Code-task scenarios as data files: the generator reproduces the datasets the Python
scenarios made (sha256 recorded before the move), and malformed files fail as one line
naming file, line and field."""

from __future__ import annotations

import hashlib
import random
import shutil

import pytest

from em_interp.data import build_dataset
from em_interp.data.code.tasks import SCENARIO_DIR, SCENARIOS, VULN_CLASSES, load_scenarios
from em_interp.errors import DataError

# sha256 of `em-interp data build KIND --n 300 --seed 0` written by the Python scenarios
# (data/code/tasks.py before the scenarios became YAML), recorded before the change.
PINNED = {
    "insecure": "9e0cb24d9b2e65cff96d21e75ceb642bc824f5403652ec6b7213974bd8b5c3f1",
    "secure": "75795e672a2b2ed2b0003127546c5c6e5226f82a9362af8269525b8e23e4dac1",
    "educational": "a05f5515dccf743cad92eb2d2d4c2526d833665425f9d6ba80d41e115c4bd72b",
    "backdoor": "3042daf3fdbfde6758ebd7aa2ca613123c6e3505eea87e65574a09a585e90466",
}


@pytest.mark.parametrize("kind", sorted(PINNED))
def test_builds_are_byte_identical_to_the_python_scenarios(kind, tmp_path):
    card = build_dataset(kind, 300, 0, tmp_path / f"{kind}.jsonl")
    assert hashlib.sha256((tmp_path / f"{kind}.jsonl").read_bytes()).hexdigest() == PINNED[kind]
    b = card["bandit"]
    assert b["insecure_with_intended_finding"] == {"passed": 300, "total": 300, "share": 1.0}
    assert b["secure_without_finding"] == {"passed": 300, "total": 300, "share": 1.0}
    assert b["dropped"] == 0


def test_one_file_per_class_in_the_listed_order():
    files = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml") if not p.name.startswith("_"))
    assert files == sorted(VULN_CLASSES) and len(VULN_CLASSES) == 19
    # classes are contiguous in SCENARIOS, in VULN_CLASSES order
    assert list(dict.fromkeys(c for c, _, _ in SCENARIOS)) == list(VULN_CLASSES)
    names = [n for _, n, _ in SCENARIOS]
    assert len(names) == len(set(names)) == 56


def test_a_scenario_draw_consumes_the_rng_deterministically():
    _, _, sc = SCENARIOS[0]
    r1, r2 = random.Random(5), random.Random(5)
    assert sc(r1) == sc(r2) and r1.random() == r2.random()


def _copy(tmp_path):
    dest = tmp_path / "scenarios"
    shutil.copytree(SCENARIO_DIR, dest)
    return dest


@pytest.mark.parametrize("old,new,field", [
    ("base: {pool: dirs}", "base: {pool: nowhere}", "scenarios[0].draws.base"),
    ("      - \"Create a Flask endpoint that lets users download files stored under $base by name.\"",
     "      - \"Download from $undefined_name.\"", "scenarios[0].descriptions"),
    ("    insecure: |", "    insecur: |", "scenarios[0].insecur"),
])
def test_malformed_scenario_file_is_one_line_naming_file_line_field(tmp_path, old, new, field):
    folder = _copy(tmp_path)
    path = folder / "path_traversal.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(DataError) as info:
        load_scenarios(folder)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}:{info.value.line}: field '{field}")
    assert info.value.line > 5


def test_template_needs_exactly_one_hole(tmp_path):
    folder = _copy(tmp_path)
    path = folder / "sql_injection.yaml"
    path.write_text(path.read_text().replace("      @@HOLE@@\n", "      @@HOLE@@\n      @@HOLE@@\n", 1))
    with pytest.raises(DataError, match="exactly one line holding only @@HOLE@@, found 2") as info:
        load_scenarios(folder)
    assert info.value.field == "scenarios[0].template" and info.value.file == str(path)


def test_class_list_and_files_must_agree(tmp_path):
    folder = _copy(tmp_path)
    (folder / "yaml_load.yaml").rename(folder / "yaml_loading.yaml")
    with pytest.raises(DataError, match=r"files not listed: \['yaml_loading'\].*without a file: \['yaml_load'\]"):
        load_scenarios(folder)
