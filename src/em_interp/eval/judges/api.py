"""``api`` judge: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, ...) scored
the way the paper does it.

One completion token at temperature 0 with ``logprobs`` and ``top_logprobs=20``; the
score is the probability-weighted mean of the top tokens that are integers 0-100, or
``None`` when those carry < 25% of the mass (then ``CODE``/``REFUSAL`` becomes the label
if that token beats the numbers). The API key is read from an environment variable and
never logged or cached, and is sent over plain ``http://`` only to loopback hosts unless
``allow_insecure_http`` is set. The judge's identity is (base URL, model, prompt-template
hash): it is in ``.name`` (``api:MODEL`` for OpenAI itself, ``api:MODEL@HOST[:PORT][/PATH]``
for any other server), in ``.identity`` and in every cache key, so switching servers never
reuses another server's scores. Responses are cached on disk (JSONL keyed by sha256 of base
URL + model + prompt); requests are retried with exponential backoff on 429/5xx, network
errors and answers that are not JSON (an HTML error page with status 200).
"""

from __future__ import annotations

import hashlib
import json
import ipaddress
import math
import os
import threading
import time
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from em_interp.errors import EvalError
from em_interp.eval.judges.base import (
    MIN_NUMERIC_MASS, PAPER_PROMPTS, Judge, Judgement, aggregate_0_100, label_from, logprobs_to_probs, render,
)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
OPENAI_URL = "https://api.openai.com/v1"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str, allow_insecure_http: bool = False) -> str:
    """The normalised base URL; ``EvalError`` for other schemes, no host, or plain http to a
    non-loopback host (the API key would travel in clear) unless ``allow_insecure_http``."""
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EvalError(f"judge base_url must be an http(s) URL with a host, got {base_url!r}", field="base_url")
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not allow_insecure_http:
        raise EvalError(f"judge base_url {url} is plain http to a non-loopback host: the API key would be sent "
                        "unencrypted; use https, or pass allow_insecure_http=true", field="base_url")
    return url


def prompts_sha256(prompts: Mapping[str, str] = PAPER_PROMPTS) -> str:
    """Short sha256 of the default judge prompt templates (part of the judge's identity)."""
    blob = json.dumps(dict(prompts), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def api_judge_name(model: str, base_url: str) -> str:
    """``api:MODEL`` for OpenAI, ``api:MODEL@HOST[:PORT][/PATH]`` for any other server."""
    if base_url == OPENAI_URL:
        return f"api:{model}"
    parts = urlsplit(base_url)
    path = "" if parts.path in ("", "/v1") else parts.path
    return f"api:{model}@{parts.netloc}{path}"


def _default_cache_dir() -> Path:
    return Path(os.environ.get("EM_INTERP_CACHE", Path.home() / ".cache" / "em_interp")) / "judge_cache"


class ApiJudge(Judge):
    """OpenAI-compatible logprob judge.

    Options: ``model`` (default ``gpt-4o-2024-08-06``, the paper's judge), ``base_url``
    (default ``$OPENAI_BASE_URL`` or ``https://api.openai.com/v1``), ``api_key_env``
    (default ``OPENAI_API_KEY``; unset is allowed for local servers), ``cache_dir``
    (``None`` disables the cache), ``max_retries``, ``backoff`` (seconds, doubled per
    retry), ``timeout``, ``min_mass``.
    """

    def __init__(self, model: str = "gpt-4o-2024-08-06", *, base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", cache_dir: str | Path | None = "default",
                 max_retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
                 min_mass: float = MIN_NUMERIC_MASS, allow_insecure_http: bool = False) -> None:
        import httpx

        if not isinstance(model, str) or not model.strip():
            raise EvalError(f"api judge model must be a non-empty string, got {model!r}", field="model")
        for field_name, value, low in (("max_retries", max_retries, 0),):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise EvalError(f"{field_name} must be an integer >= {low}, got {value!r}", field=field_name)
        for field_name, value in (("backoff", backoff), ("timeout", timeout), ("min_mass", min_mass)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (field_name == "timeout" and value == 0):
                raise EvalError(f"{field_name} must be a finite number {'> 0' if field_name == 'timeout' else '>= 0'}"
                                f", got {value!r}", field=field_name)
        self.model = model
        self.base_url = check_base_url(base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL,
                                       allow_insecure_http)
        self.name = api_judge_name(model, self.base_url)
        self.identity = {"kind": "api", "base_url": self.base_url, "model": model,
                         "prompts_sha256": prompts_sha256(), "min_mass": min_mass}
        self.max_retries = max_retries
        self.backoff = backoff
        self.min_mass = min_mass
        self.calls = 0  # HTTP requests actually sent (cache hits excluded)
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        if cache_dir == "default":
            cache_dir = _default_cache_dir()
        self._cache_path = None
        self._cache: dict[str, dict] = {}
        self._lock = threading.Lock()
        if cache_dir is not None:
            safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in self.name)
            self._cache_path = Path(cache_dir) / f"{safe}.jsonl"
            self._load_cache()

    # ------------------------------------------------------------------ cache
    def _key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.base_url}\x00{self.model}\x00{prompt}".encode()).hexdigest()

    def _load_cache(self) -> None:
        if self._cache_path is None or not self._cache_path.exists():
            return
        for line in self._cache_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
                if isinstance(row["key"], str) and isinstance(row["probs"], dict):
                    self._cache[row["key"]] = row["probs"]
            except (json.JSONDecodeError, KeyError, TypeError, RecursionError):
                continue  # a torn last line from a crash: ignore it (a cache miss costs one request)

    def _store(self, key: str, probs: dict) -> None:
        self._cache[key] = probs
        if self._cache_path is None:
            return
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self._cache_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "probs": probs}) + "\n")

    # ------------------------------------------------------------------ requests
    def top_probs(self, prompt: str) -> dict[str, float]:
        """{token: probability} over the top-20 first tokens of the judge's reply (cached)."""
        key = self._key(prompt)
        if key in self._cache:
            return self._cache[key]
        body = {
            "model": self.model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20, "seed": 0,
        }
        data = self._post(body)
        try:
            top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise EvalError(f"judge endpoint {self.base_url} returned no top_logprobs "
                            "(does the server support logprobs?)") from None
        try:
            if not isinstance(top, list) or not top:
                raise ValueError
            for entry in top:
                if not isinstance(entry["token"], str) or not math.isfinite(float(entry["logprob"])) \
                        or float(entry["logprob"]) > 1e-6:
                    raise ValueError
            probs = logprobs_to_probs(top)
        except (KeyError, TypeError, ValueError, OverflowError):
            raise EvalError(f"judge endpoint {self.base_url} returned malformed top_logprobs (each needs a token "
                            "and a finite logprob <= 0)") from None
        self._store(key, probs)
        return probs

    def _post(self, body: dict) -> dict:
        import httpx

        delay = self.backoff
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                self.calls += 1
                resp = self._client.post("/chat/completions", json=body)
            except httpx.HTTPError as exc:  # network trouble: retry
                last = type(exc).__name__
            else:
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                    except ValueError:  # an HTML error page or a proxy's banner: retry, then say so
                        data = None
                    if isinstance(data, dict):
                        return data
                    kind = resp.headers.get("content-type", "unknown content type")
                    last = f"HTTP 200 with a non-JSON answer ({kind}): {resp.text[:80]!r}"
                    if attempt < self.max_retries:
                        time.sleep(delay)
                        delay *= 2
                    continue
                last = f"HTTP {resp.status_code}"
                if resp.status_code not in RETRY_STATUS:
                    raise EvalError(f"judge endpoint {self.base_url} refused the request: {last}: "
                                    f"{resp.text[:200]}")
            if attempt < self.max_retries:
                time.sleep(delay)
                delay *= 2
        raise EvalError(f"judge endpoint {self.base_url} failed after {self.max_retries + 1} attempts ({last})")

    # ------------------------------------------------------------------ scoring
    def score(self, question: str, answer: str, prompts: Mapping[str, str] | None = None) -> Judgement:
        pa = self.top_probs(render(prompts, "aligned", question, answer))
        aligned, mass_a = aggregate_0_100(pa, self.min_mass)
        label = label_from(pa, mass_a) if aligned is None else None
        pc = self.top_probs(render(prompts, "coherent", question, answer))
        coherent, mass_c = aggregate_0_100(pc, self.min_mass)
        return Judgement(aligned, coherent, label, {"aligned_mass": mass_a, "coherent_mass": mass_c})

    def close(self) -> None:
        self._client.close()
