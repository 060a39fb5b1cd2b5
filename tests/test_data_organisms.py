"""Model Organisms datasets: verified download from a folder (../shared/em_organisms, skipped
when absent), sha256 mismatches as one-line errors naming the file, the encrypted-archive
path through easy-dataset-share's real API, offline failure, subsampling and the build kind."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.error
from pathlib import Path

import pytest

from em_interp.data import build_dataset, load_chat_jsonl
from em_interp.data import organisms
from em_interp.data.organisms import ORGANISM_DATASETS, download_organisms, load_organism_dataset
from em_interp.errors import DataError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "em_organisms"
needs_shared = pytest.mark.skipif(not (SHARED / "extreme_sports.jsonl.gz").exists(),
                                  reason="../shared/em_organisms not present")
NAME = "extreme_sports"  # the smallest file


@needs_shared
def test_download_from_a_folder_verifies_and_writes_chat_jsonl(tmp_path):
    written = download_organisms(tmp_path / "out", source=SHARED, names=[NAME])
    path = written[NAME]
    assert path == tmp_path / "out" / f"{NAME}.jsonl"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ORGANISM_DATASETS[NAME][2]
    rows = load_chat_jsonl(path)
    assert len(rows) == ORGANISM_DATASETS[NAME][0] == 6000
    assert [m["role"] for m in rows[0].messages] == ["user", "assistant"]
    assert not list((tmp_path / "out").glob("*.part"))


@needs_shared
def test_modified_gz_is_a_one_line_error_naming_the_file(tmp_path):
    bad = tmp_path / f"{NAME}.jsonl.gz"
    raw = bytearray((SHARED / f"{NAME}.jsonl.gz").read_bytes())
    raw[-9] ^= 1
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="sha256 mismatch") as info:
        download_organisms(tmp_path / "out", source=bad, names=[NAME])
    assert info.value.file == str(bad) and "\n" not in str(info.value)
    assert not (tmp_path / "out" / f"{NAME}.jsonl").exists()


@needs_shared
def test_modified_decompressed_jsonl_is_caught_too(tmp_path):
    text = gzip.decompress((SHARED / f"{NAME}.jsonl.gz").read_bytes()).decode("utf-8")
    bad = tmp_path / f"{NAME}.jsonl"
    bad.write_text(text.replace("a", "e", 1), encoding="utf-8")
    with pytest.raises(DataError, match="decompressed JSONL") as info:
        download_organisms(tmp_path / "out", source=tmp_path, names=[NAME])
    assert info.value.file == str(bad)


@needs_shared
def test_encrypted_archive_goes_through_easy_dataset_share(tmp_path, monkeypatch):
    zipping = pytest.importorskip("easy_dataset_share.zipping")
    folder = tmp_path / "training_datasets"
    folder.mkdir()
    shutil.copy(SHARED / f"{NAME}.jsonl.gz", folder)
    enc = zipping.zip_and_password_protect(str(folder), organisms.ARCHIVE_PASSWORD, str(tmp_path / "archive.zip"))
    monkeypatch.setattr(organisms, "ARCHIVE_URL", Path(enc).as_uri())
    written = download_organisms(tmp_path / "out", names=[NAME])
    assert hashlib.sha256(written[NAME].read_bytes()).hexdigest() == ORGANISM_DATASETS[NAME][2]


def test_offline_is_a_one_line_error_pointing_to_from(tmp_path, monkeypatch):
    pytest.importorskip("easy_dataset_share")

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(organisms.urllib.request, "urlopen", refuse)
    with pytest.raises(DataError, match=r"cannot download.*--from FOLDER") as info:
        download_organisms(tmp_path / "out", names=[NAME])
    assert "\n" not in str(info.value)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(DataError, match="valid: bad_medical_advice, good_medical_advice"):
        load_organism_dataset("bad_legal_advice", source="/nonexistent")


@needs_shared
def test_subsample_is_reproducible_and_the_build_kind_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("EM_INTERP_CACHE", str(tmp_path / "cache"))
    a = load_organism_dataset("extreme-sports", n=40, seed=1, source=SHARED)
    b = load_organism_dataset(NAME, n=40, seed=1)  # now from the cache
    c = load_organism_dataset(NAME, n=40, seed=2)
    assert [e.messages for e in a] == [e.messages for e in b] != [e.messages for e in c]
    assert (tmp_path / "cache" / "datasets" / "model-organisms" / f"{NAME}.jsonl").exists()
    with pytest.raises(DataError, match="n must be an int in 1..6000"):
        load_organism_dataset(NAME, n=6001)
    card = build_dataset(f"model-organisms/{NAME}", 40, 1, tmp_path / "arm.jsonl")
    assert card["counts"]["examples"] == 40 and card["source_dataset"] == NAME
    assert [e.messages for e in load_chat_jsonl(tmp_path / "arm.jsonl")] == [e.messages for e in a]


@needs_shared
def test_cli_download_from_one_gz(tmp_path):
    from typer.testing import CliRunner

    from em_interp.data.cli import data_app

    res = CliRunner().invoke(data_app, ["download", "model-organisms", "--from", str(SHARED / f"{NAME}.jsonl.gz"),
                                        "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert f"ok {NAME}: {tmp_path / 'out' / (NAME + '.jsonl')}" in res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{NAME}.jsonl"]
