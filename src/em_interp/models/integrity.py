"""The converted cache verifies what it loads.

At conversion every file of the folder is recorded in the marker (``files``: size, sha256,
mtime_ns). On each load (``verify="quick"``, the default) every recorded file must exist
with its size; a file whose mtime changed since conversion is hashed in full and must
match; every safetensors header is parsed and must cover the file exactly. That costs
milliseconds for an untouched cache, while an edited or truncated file is caught.
``load_model(..., verify="full")`` hashes every file (about 1.5 s for the 540 MB smollm2
folder). Markers written before hashes were recorded (no ``files``) get the structural
checks plus "no file newer than the marker" (the marker is written last);
``em-interp models pull NAME --force`` re-converts and records the hashes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from em_interp.errors import ModelError
from em_interp.hashing import sha256_file
from em_interp.tensorfiles import check_safetensors

Verify = Literal["quick", "full", "off"]


def record_files(folder: Path, marker_name: str) -> dict[str, dict[str, Any]]:
    """``{file: {size, sha256, mtime_ns}}`` of every file in ``folder`` except the marker."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != marker_name:
            st = f.stat()
            out[f.name] = {"size": st.st_size, "sha256": sha256_file(f), "mtime_ns": st.st_mtime_ns}
    return out


def read_marker(path: Path) -> dict[str, Any]:
    """The marker JSON of a converted folder; one line naming it if unreadable."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"corrupt cache marker ({type(exc).__name__}); run `em-interp models pull "
                         f"{path.parent.name} --force`", file=path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise ModelError(f"corrupt cache marker (no model name); run `em-interp models pull {path.parent.name} "
                         "--force`", file=path)
    files = meta.get("files")
    if files is not None and not (isinstance(files, dict) and all(
            isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
            for v in files.values())):
        raise ModelError(f"corrupt cache marker (bad 'files' record); run `em-interp models pull "
                         f"{path.parent.name} --force`", file=path, field="files")
    return meta


def verify_converted(folder: Path, marker_name: str, meta: dict[str, Any], *, mode: Verify = "quick") -> list[str]:
    """Check a converted folder against its marker (see the module doc); returns the names of
    the files hashed in full. Raises ``ModelError`` naming the first bad file."""
    if mode == "off":
        return []
    name = meta.get("name", folder.name)
    fix = f"run `em-interp models pull {name} --force` to convert it again"
    hashed: list[str] = []
    files = meta.get("files")
    if files is None:  # a marker from before hashes were recorded
        stamp = (folder / marker_name).stat().st_mtime_ns
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.name != marker_name and f.stat().st_mtime_ns > stamp + 2_000_000_000:
                raise ModelError(f"modified after conversion (newer than its marker); {fix}", file=f)
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            raise ModelError(f"converted folder has no weights; {fix}", file=folder)
        for f in weights:
            check_safetensors(f, ModelError)
        return hashed
    for fname, rec in files.items():
        f = folder / fname
        if not f.is_file():
            raise ModelError(f"missing from the converted cache; {fix}", file=f)
        st = f.stat()
        if st.st_size != rec["size"]:
            raise ModelError(f"has {st.st_size} bytes, {rec['size']} at conversion (truncated or replaced); {fix}",
                             file=f)
        if mode == "full" or st.st_mtime_ns != rec.get("mtime_ns"):
            hashed.append(fname)
            got = sha256_file(f)
            if got != rec["sha256"]:
                raise ModelError(f"corrupt: sha256 {got[:12]}… differs from {rec['sha256'][:12]}… recorded at "
                                 f"conversion; {fix}", file=f)
        if fname.endswith(".safetensors"):
            check_safetensors(f, ModelError)
    return hashed
