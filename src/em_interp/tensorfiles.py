"""Safetensors files checked before use: a corrupt file is one line naming it, never a traceback.

``check_safetensors(path)`` parses the header (8-byte length + JSON) and checks that every
tensor's byte range lies inside the file and that the file ends where the data ends, without
reading the data. ``load_safetensors(path)`` does that check, then loads the tensors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from em_interp.errors import EmInterpError

MAX_HEADER_BYTES = 100_000_000
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def check_safetensors(path: str | Path, error: type[EmInterpError] = EmInterpError) -> dict[str, Any]:
    """The parsed header ``{name: {dtype, shape, data_offsets}}`` (``__metadata__`` dropped);
    ``error`` naming the file if it is missing, truncated or not a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise error("file not found" if not path.exists() else "is not a file", file=path)

    def bad(why: str) -> EmInterpError:
        return error(f"corrupt safetensors file ({why})", file=path)

    size = path.stat().st_size
    if size < 8:
        raise bad(f"{size} bytes, shorter than its header length")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n == 0 or n > MAX_HEADER_BYTES or 8 + n > size:
            raise bad(f"header length {n} does not fit a {size}-byte file")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise bad("header is not valid JSON") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    header.pop("__metadata__", None)
    end = 0
    for name, entry in header.items():
        try:
            start, stop = entry["data_offsets"]
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            width = _DTYPE_BYTES.get(entry["dtype"])
            ok = isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r} has a malformed entry") from None
        if not ok or (width is not None and stop - start != count * width):
            raise bad(f"tensor {name!r} has inconsistent offsets")
        end = max(end, stop)
    if 8 + n + end != size:
        raise bad(f"data ends at byte {8 + n + end} but the file has {size} (truncated or padded)")
    return header


def load_safetensors(path: str | Path, error: type[EmInterpError] = EmInterpError, device: str = "cpu") -> dict:
    """Tensors of a checked safetensors file (see ``check_safetensors``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_safetensors(path, error)
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise error(f"corrupt safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                    file=path) from None
