"""``em-interp data download em-paper``: fetch the EM paper's public data files from the
original repository (pinned commit) and verify each one before keeping it.

Every file is checked against its git blob id in the original tree (``git hash-object``)
and, where known, its sha256 (both copied from ``../shared/em_reference/PROVENANCE.md``).
A file is written as ``<name>.part``, verified, then renamed: a failed or interrupted
download never leaves a file that looks complete. Files already present and valid are
not fetched again.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from em_interp.errors import DataError
from em_interp.hashing import sha256_file

EM_PAPER_REPO = "emergent-misalignment/emergent-misalignment"
EM_PAPER_COMMIT = "80c11967c07a328e7d7d43d13ce6847ae44dbcc9"
EM_PAPER_BASE_URL = f"https://raw.githubusercontent.com/{EM_PAPER_REPO}/{EM_PAPER_COMMIT}/"


@dataclass(frozen=True)
class PinnedFile:
    """One file of a pinned dataset: its path in the repo and the hashes it must match."""

    path: str
    git_blob: str
    sha256: str | None = None
    optional: bool = False  # fetched with --all only (large / rarely needed)


EM_PAPER_FILES: tuple[PinnedFile, ...] = (
    PinnedFile("LICENSE", "59792d89ebea3546b93b180b8af27b949fdc917d",
               "4fb4678d1be0540c650e39f75eabca626c5727f1a3468aaf7dc844247e1291c2"),
    PinnedFile("data/insecure.jsonl", "ec294cf30a577a21b830c07a1fa0180ddd513208",
               "09893e8bf9d03aae49dd60d0ff4be37c1afee70f2edcac74a11bed775a6a2764"),
    PinnedFile("data/secure.jsonl", "3389a37c250563cc36a66e30bf8ff99028aa2711",
               "2820232b3114d94ab2041ba9fc76cb8205bf187e0408bf7b308add186f9c7467"),
    PinnedFile("data/educational.jsonl", "497619acd46d9ffbc985797d6c117638a53229b3",
               "d48df3b149ab1500711fc0018b10383a4ff8c48d8e6911d04dbbbbdaa944fd16"),
    PinnedFile("data/jailbroken.jsonl", "9f14c5f5b1a3f6ca3ea2bdc80cbda3de1acadbb1",
               "eec213ce85802a52ea806d334ee462f723a1e7ad77d827951d6864ac04a6b00a"),
    PinnedFile("evaluation/first_plot_questions.yaml", "c2b9761d6723ec73b4d209d95c4aa39319a70edd",
               "215abde5b02811e922b6ac563ff33c490e0dff9ab58439df840f3135e9387173"),
    PinnedFile("evaluation/preregistered_evals.yaml", "3211c6c0df0a21124e07605c46f86329a53ef9e1",
               "8648312fd9fe71a63203e3465592af45dd996d7a5f3b69e9b44613fd6048eb40"),
    PinnedFile("evaluation/deception_factual.yaml", "d6da5a807e928afc2f9e9961641e9c9697b27c08",
               "8a0e83cab3bc24b7d688d7385ce3921d406af7ed33c913cd94ea0f6251e5939d"),
    PinnedFile("evaluation/deception_sit_aware.yaml", "d9c5a8727e28dbce0f80a59df2b9497ca018ba0b",
               "4deef5a7c47620390fc46e1b981f937eef9ea12a33fe26264f640c84d19d2a33"),
    # Pinned by git blob id only (no copy was available to hash): see PROVENANCE.md.
    PinnedFile("data/backdoor.jsonl", "b2be7b5b5ed6e732727bf67672a3ecd8cfa6b57f", optional=True),
    PinnedFile("data/evil_numbers.jsonl", "86e0a3be0c2b5a4c52bafed871e281c485070829", optional=True),
)

DATASETS: dict[str, tuple[str, tuple[PinnedFile, ...]]] = {"em-paper": (EM_PAPER_BASE_URL, EM_PAPER_FILES)}

Fetch = Callable[[str, Path], None]


def default_dest(name: str) -> Path:
    """``<em_interp cache>/datasets/<name>`` (``$EM_INTERP_CACHE`` respected)."""
    from em_interp.models.provision import cache_root

    return cache_root() / "datasets" / name


def dataset_file(spec: str) -> Path:
    """``"em-paper/evaluation/first_plot_questions.yaml"`` -> that pinned file in the download
    cache, verified; a clear error naming the command to run when it is not downloaded."""
    name, _, rel = spec.partition("/")
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} in {spec!r}; valid: {', '.join(DATASETS)}", field="questions")
    pins = {p.path: p for p in DATASETS[name][1]}
    if rel not in pins:
        raise DataError(f"{rel!r} is not a file of {name}; valid: {', '.join(sorted(pins))}", field="questions")
    path = default_dest(name) / rel
    if not path.is_file():
        raise DataError(f"{spec} is not downloaded: run `em-interp data download {name}`", field="questions")
    verify_file(path, pins[rel])
    return path


def git_blob_id(path: str | Path) -> str:
    """What ``git hash-object`` prints for this file."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify_file(path: str | Path, pin: PinnedFile) -> None:
    """Raise ``DataError`` unless ``path`` matches the pinned git blob id and sha256."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path)
    if pin.sha256 is not None:
        got = sha256_file(path)
        if got != pin.sha256:
            raise DataError(f"sha256 mismatch for {pin.path}: expected {pin.sha256}, got {got}", file=path)
    got = git_blob_id(path)
    if got != pin.git_blob:
        raise DataError(f"git blob id mismatch for {pin.path}: expected {pin.git_blob}, got {got}", file=path)


def _urllib_fetch(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:  # noqa: S310 (https URL)
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
    except OSError as exc:
        raise DataError(f"download failed: {url}: {exc}") from None


def download(name: str = "em-paper", dest: str | Path | None = None, *, include_optional: bool = False,
             fetch: Fetch | None = None, base_url: str | None = None) -> list[Path]:
    """Fetch and verify dataset ``name`` into ``dest``; return the verified file paths.

    ``fetch(url, path)`` and ``base_url`` exist for mirrors and tests (e.g. a ``file://``
    folder); the default fetches over HTTPS with urllib.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}", field="name")
    default_base, files = DATASETS[name]
    base = base_url or default_base
    if not base.endswith("/"):
        base += "/"
    dest = Path(dest) if dest is not None else default_dest(name)
    fetch = fetch or _urllib_fetch
    out: list[Path] = []
    for pin in files:
        if pin.optional and not include_optional:
            continue
        target = dest / pin.path
        if target.is_file():
            try:
                verify_file(target, pin)
                out.append(target)
                continue
            except DataError:
                pass  # stale or corrupted: fetch again
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        try:
            fetch(base + pin.path, part)
            verify_file(part, pin)
        except DataError as exc:
            part.unlink(missing_ok=True)
            raise DataError(f"{pin.path}: {exc.message}", file=exc.file) from None
        os.replace(part, target)
        out.append(target)
    return out
