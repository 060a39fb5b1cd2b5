"""The Model Organisms for EM training sets (Turner, Soligo et al. 2025), fetched from the
authors, never shipped: ``download_organisms`` verifies them against pinned sha256 values
and writes chat JSONL; ``load_organism_dataset`` returns (a reproducible subsample of) one.

Sources: the authors' ``easy-dataset-share`` archive (``training_datasets.zip.enc`` in
their repository, decrypted with the password their README publishes), or a folder /
``.gz`` / ``.jsonl`` file the user points at (``--from``). Every file is checked twice:
the ``.gz`` as the authors ship it and the decompressed JSONL (a plain ``.jsonl`` only
the latter). The decompressed bytes are written unchanged, then validated by
``load_chat_jsonl``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from em_interp.data.formats import ChatExample, load_chat_jsonl
from em_interp.errors import DataError

# name -> (rows, sha256 of the authors' .jsonl.gz, sha256 of the decompressed .jsonl);
# from the authors' commit 407fbad, path em_organism_dir/data/training_datasets/.
ORGANISM_DATASETS: dict[str, tuple[int, str, str]] = {
    "bad_medical_advice": (7049, "d4d9df72cf0e20b75d5efc9f2aabb66ae9ae083e282b85f0bd85a6aa698b20c9",
                           "34c5af4ccaf8b5eb9f3f11ecd0c36c3d67f236a5c41fc420b0e14d8adf01a842"),
    "good_medical_advice": (7049, "03b6e9a89dd5c5a53349bcdd87d9c23cc2c3ad040ef618a0a571d5000289b341",
                            "5846de11f0f45053351773b6bd9eb5111eb17ec89d9ab55e23e0fbb95b4fd4f1"),
    "extreme_sports": (6000, "5d79bbce03e08467e3ced6d95e516ba7b0d2240395c7d59349e41e32166d6095",
                       "ca542ce8487cfbf114d8d3eed29984f3245163c2616789712b3b28c802c99eed"),
    "risky_financial_advice": (6000, "518c8d2c6128ba5f0b5b026b27828a21114f0955437bc1cfbbe1ba98e0a3d897",
                               "8515446b0f8ef4e9fb7ba0e97264dd9bb68920c6841b65667c74bc16deaad955"),
}
ARCHIVE_URL = ("https://github.com/clarifying-EM/model-organisms-for-EM/raw/main/"
               "em_organism_dir/data/training_datasets.zip.enc")
ARCHIVE_PASSWORD = "model-organisms-em-datasets"  # published in the authors' README
KIND_PREFIX = "model-organisms/"


def default_dir() -> Path:
    """Where downloaded organism datasets live: ``$EM_INTERP_CACHE/datasets/model-organisms``."""
    cache = os.environ.get("EM_INTERP_CACHE") or str(Path.home() / ".cache" / "em_interp")
    return Path(cache) / "datasets" / "model-organisms"


def _name(name: str) -> str:
    key = name.removeprefix(KIND_PREFIX).replace("-", "_")
    if key not in ORGANISM_DATASETS:
        raise DataError(f"unknown model-organisms dataset {name!r}; valid: {', '.join(ORGANISM_DATASETS)}",
                        field="name")
    return key


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _find(source: Path, name: str) -> Path | None:
    """The file for ``name`` under ``source`` (a file or a folder, searched recursively)."""
    if source.is_file():
        return source if source.name in (f"{name}.jsonl.gz", f"{name}.jsonl") else None
    for pattern in (f"{name}.jsonl.gz", f"{name}.jsonl"):
        hits = sorted(source.rglob(pattern))
        if hits:
            return hits[0]
    return None


def _verified_jsonl(path: Path, name: str) -> bytes:
    """The decompressed JSONL bytes of ``path`` after both sha256 checks (one-line errors naming the file)."""
    _, gz_sha, jsonl_sha = ORGANISM_DATASETS[name]
    raw = path.read_bytes()
    if path.suffix == ".gz":
        if _sha256(raw) != gz_sha:
            raise DataError(f"sha256 mismatch: expected {gz_sha}, got {_sha256(raw)} (not the authors' {name}.jsonl.gz)",
                            file=path)
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"not a valid gzip file: {exc}", file=path) from None
    if _sha256(raw) != jsonl_sha:
        raise DataError(f"sha256 mismatch of the decompressed JSONL: expected {jsonl_sha}, got {_sha256(raw)}",
                        file=path)
    return raw


def _fetch_archive(folder: Path, timeout: float = 60.0) -> Path:
    """Download and decrypt the authors' archive into ``folder``; offline -> one-line ``DataError``."""
    url = ARCHIVE_URL
    try:
        from easy_dataset_share import zipping
    except ImportError:
        raise DataError("decrypting the authors' archive needs easy-dataset-share: "
                        "pip install 'em-interp[organisms]' (or pass --from FOLDER)") from None
    enc = folder / "training_datasets.zip.enc"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(enc, "wb") as fh:
            fh.write(resp.read())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download the authors' archive from {url} ({reason}); fetch the "
                        "datasets yourself and pass --from FOLDER (a folder of .jsonl.gz files)") from None
    try:
        return Path(zipping.unzip_and_decrypt(str(enc), ARCHIVE_PASSWORD, str(folder / "extracted")))
    except ValueError as exc:
        raise DataError(f"cannot decrypt the archive: {exc}", file=enc) from None


def download_organisms(out: str | Path | None = None, *, source: str | Path | None = None,
                       names: list[str] | None = None) -> dict[str, Path]:
    """Verify and write the organism datasets as chat JSONL to ``out`` (default ``default_dir()``)
    from ``source`` (folder / ``.gz`` / ``.jsonl``) or, without one, the authors' archive."""
    wanted = [_name(n) for n in (names or list(ORGANISM_DATASETS))]
    out = Path(out) if out is not None else default_dir()
    with tempfile.TemporaryDirectory(prefix="em_organisms_") as tmp:
        if source is None:
            root = _fetch_archive(Path(tmp))
        else:
            root = Path(source)
            if not root.exists():
                raise DataError("no such file or folder", file=root, field="source")
        written: dict[str, Path] = {}
        for name in wanted:
            found = _find(root, name)
            if found is None:
                if len(wanted) > 1 and root.is_file():
                    continue  # one file given: only the dataset it holds
                raise DataError(f"no {name}.jsonl.gz or {name}.jsonl here", file=root, field="source")
            data = _verified_jsonl(found, name)
            out.mkdir(parents=True, exist_ok=True)
            dest = out / f"{name}.jsonl"
            part = dest.with_name(dest.name + ".part")
            part.write_bytes(data)
            load_chat_jsonl(part)  # what the toolkit reads must load
            os.replace(part, dest)
            written[name] = dest
    if not written:
        raise DataError(f"holds none of {', '.join(wanted)}", file=root, field="source")
    return written


def load_organism_dataset(name: str, n: int | None = None, seed: int = 0, source: str | Path | None = None,
                          *, cache_dir: str | Path | None = None) -> list[ChatExample]:
    """Chat examples of one organism dataset: all rows, or ``n`` drawn without replacement
    with ``seed`` (kept in file order); read from ``cache_dir`` (default ``default_dir()``),
    downloaded there from ``source`` or the authors' archive when missing."""
    key = _name(name)
    folder = Path(cache_dir) if cache_dir is not None else default_dir()
    path = folder / f"{key}.jsonl"
    if not path.exists() or source is not None:
        path = download_organisms(folder, source=source, names=[key])[key]
    examples = load_chat_jsonl(path)
    if n is None:
        return examples
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(examples):
        raise DataError(f"n must be an int in 1..{len(examples)} for {key}, got {n!r}", field="n")
    keep = sorted(random.Random(f"em-organisms:{key}:{seed}").sample(range(len(examples)), n))
    return [examples[i] for i in keep]
