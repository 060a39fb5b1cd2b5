"""The family of Python coding tasks, read from data files: one YAML per vulnerability
class in ``scenarios/`` (plus ``scenarios/_common.yaml``: the class order and shared name pools).

A scenario draws names from a seeded ``random.Random`` and returns a ``CodeTask``: a
program ``template`` with one hole (a line holding only ``@@HOLE@@``) and two fillings of
it, ``insecure`` (the flawed version, with no comment or name that hints at the flaw)
and ``secure`` (the same task done safely). Texts are ``string.Template`` strings with
``$names``, so the code may contain braces freely. Nothing here is ever executed.

Scenario fields: ``name``, ``draws``, ``descriptions``, ``template``, ``insecure``,
``secure``, ``imports``, ``insecure_imports``, ``secure_imports``. ``draws`` is evaluated
top to bottom, each entry one of:

- ``key: "text"`` -- fixed, ``$names`` drawn above filled in (no randomness);
- ``key: [a, b, ...]`` -- one option drawn (options may use ``$names``);
- ``key: {pool: P}`` / ``{pool: P, first: k}`` -- one drawn from shared pool ``P`` (its first k);
- ``key: {chars: "abc", length: n}`` -- ``n`` characters drawn one by one;
- a drawn option that is a mapping adds all its keys as names (``{one: user, table: users}``).

Then ``insecure`` and ``secure`` (a text, or a list of texts: one drawn), then one of the
``descriptions``. The draw order is part of the data: editing it changes every dataset.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from em_interp.config import nearest_line, read_yaml
from em_interp.errors import DataError

HOLE = "@@HOLE@@"
SCENARIO_DIR = Path(__file__).with_name("scenarios")
COMMON_FILE = "_common.yaml"
_FIELDS = ("name", "draws", "descriptions", "template", "insecure", "secure", "imports",
           "insecure_imports", "secure_imports")
_REQUIRED = ("name", "draws", "descriptions", "template", "insecure", "secure")


@dataclass
class CodeTask:
    """One concrete task: shared program text plus the insecure and the secure filling."""

    vuln_class: str
    scenario: str
    description: str
    template: str
    insecure: str
    secure: str
    imports: list[str] = field(default_factory=list)
    insecure_imports: list[str] = field(default_factory=list)
    secure_imports: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    """One scenario as read from its data file; calling it with an RNG draws a ``CodeTask``."""

    vuln_class: str
    name: str
    draws: tuple[tuple[str, Any], ...]
    descriptions: tuple[str, ...]
    template: str
    insecure: str | tuple[str, ...]
    secure: str | tuple[str, ...]
    imports: tuple[str, ...]
    insecure_imports: tuple[str, ...]
    secure_imports: tuple[str, ...]
    pools: dict = field(compare=False, repr=False)  # the shared name pools of _common.yaml

    def __call__(self, r: random.Random) -> CodeTask:
        """Draw the names, the fillings and the description, in the data file's order."""
        names: dict[str, str] = {}
        for key, spec in self.draws:
            _draw(r, key, spec, names, self.pools)
        insecure = _pick(r, self.insecure)
        secure = _pick(r, self.secure)
        texts = [Template(d).substitute(names) for d in self.descriptions]
        return CodeTask(
            vuln_class=self.vuln_class, scenario=self.name, description=r.choice(texts),
            template=_fill(self.template, names), insecure=_fill(insecure, names), secure=_fill(secure, names),
            imports=list(self.imports), insecure_imports=list(self.insecure_imports),
            secure_imports=list(self.secure_imports),
        )


def _fill(text: str, names: dict[str, str]) -> str:
    return Template(text.strip("\n")).substitute(names)


def _pick(r: random.Random, text: str | tuple[str, ...]) -> str:
    return text if isinstance(text, str) else r.choice(text)


def _draw(r: random.Random, key: str, spec: Any, names: dict[str, str], pools: dict) -> None:
    """Evaluate one ``draws`` entry into ``names`` (see the module docstring)."""
    if isinstance(spec, str):
        names[key] = Template(spec).substitute(names)
        return
    if isinstance(spec, list):
        item = r.choice(spec)
    elif "pool" in spec:
        pool = pools[spec["pool"]]
        item = r.choice(pool[: spec["first"]] if "first" in spec else pool)
    else:
        names[key] = "".join(r.choice(spec["chars"]) for _ in range(spec["length"]))
        return
    if isinstance(item, dict):
        names.update(item)
    else:
        names[key] = Template(item).substitute(names)


# ----------------------------------------------------------------------------- loading


class _Reader:
    """Field checks for one data file: failures are ``DataError`` naming file:line and field."""

    def __init__(self, path: Path):
        self.path = path
        self.data, self.lines = read_yaml(path)

    def fail(self, fieldpath: str, message: str) -> DataError:
        return DataError(message, file=self.path, line=nearest_line(self.lines, fieldpath), field=fieldpath)

    def text(self, value: Any, fieldpath: str) -> str:
        if not isinstance(value, str):
            raise self.fail(fieldpath, f"expected a string, got {type(value).__name__}")
        return value

    def texts(self, value: Any, fieldpath: str, *, allow_empty: bool = True) -> tuple[str, ...]:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise self.fail(fieldpath, "expected a non-empty list of strings" if not allow_empty
                            else "expected a list of strings")
        return tuple(self.text(v, f"{fieldpath}[{i}]") for i, v in enumerate(value))


def _identifiers(text: str) -> set[str]:
    return set(Template(text).get_identifiers())


def _check_draw(rd: _Reader, key: str, spec: Any, fp: str, pools: dict, known: set[str]) -> set[str]:
    """Validate one draw spec; returns the names it defines."""
    def options_ok(options: list, where: str) -> set[str]:
        if not options:
            raise rd.fail(where, "a draw needs at least one option")
        defined: set[str] = set()
        for i, opt in enumerate(options):
            if isinstance(opt, dict):
                if not opt or not all(isinstance(k, str) and isinstance(v, str) for k, v in opt.items()):
                    raise rd.fail(f"{where}[{i}]", "a mapping option needs string keys and string values")
                defined |= set(opt)
            else:
                missing = _identifiers(rd.text(opt, f"{where}[{i}]")) - known
                if missing:
                    raise rd.fail(f"{where}[{i}]", f"uses ${sorted(missing)[0]} before it is drawn")
                defined.add(key)
        return defined

    if isinstance(spec, str):
        missing = _identifiers(spec) - known
        if missing:
            raise rd.fail(fp, f"uses ${sorted(missing)[0]} before it is drawn")
        return {key}
    if isinstance(spec, list):
        return options_ok(spec, fp)
    if isinstance(spec, dict) and set(spec) in ({"pool"}, {"pool", "first"}):
        if spec["pool"] not in pools:
            raise rd.fail(fp, f"unknown pool {spec['pool']!r}; pools: {', '.join(sorted(pools))}")
        if "first" in spec and (not isinstance(spec["first"], int) or spec["first"] < 1):
            raise rd.fail(f"{fp}.first", "expected a positive integer")
        return options_ok(pools[spec["pool"]][: spec.get("first")], fp)
    if isinstance(spec, dict) and set(spec) == {"chars", "length"}:
        if not isinstance(spec["chars"], str) or not spec["chars"]:
            raise rd.fail(f"{fp}.chars", "expected a non-empty string")
        if not isinstance(spec["length"], int) or spec["length"] < 1:
            raise rd.fail(f"{fp}.length", "expected a positive integer")
        return {key}
    raise rd.fail(fp, "a draw is a string, a list of options, {pool: P[, first: k]} or {chars: S, length: n}")


def _read_scenario(rd: _Reader, vclass: str, i: int, raw: Any, pools: dict) -> Scenario:
    fp = f"scenarios[{i}]"
    if not isinstance(raw, dict):
        raise rd.fail(fp, "expected a mapping")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise rd.fail(f"{fp}.{unknown[0]}", f"unknown field; fields: {', '.join(_FIELDS)}")
    for key in _REQUIRED:
        if key not in raw:
            raise rd.fail(fp, f"missing field '{key}'")
    if not isinstance(raw["draws"], dict):
        raise rd.fail(f"{fp}.draws", "expected a mapping of name -> draw")
    known: set[str] = set()
    for key, spec in raw["draws"].items():
        known |= _check_draw(rd, str(key), spec, f"{fp}.draws.{key}", pools, known)
    texts: dict[str, Any] = {"descriptions": rd.texts(raw["descriptions"], f"{fp}.descriptions", allow_empty=False)}
    for key in ("template", "insecure", "secure"):
        value = raw[key]
        texts[key] = (rd.texts(value, f"{fp}.{key}", allow_empty=False) if isinstance(value, list)
                      else rd.text(value, f"{fp}.{key}"))
    for key, value in texts.items():
        for t in (value,) if isinstance(value, str) else value:
            missing = _identifiers(t) - known
            if missing:
                raise rd.fail(f"{fp}.{key}", f"uses ${sorted(missing)[0]}, which no draw defines")
    holes = [line for line in texts["template"].splitlines() if line.strip() == HOLE]
    if len(holes) != 1:
        raise rd.fail(f"{fp}.template", f"needs exactly one line holding only {HOLE}, found {len(holes)}")
    return Scenario(
        vuln_class=vclass, name=rd.text(raw["name"], f"{fp}.name"), draws=tuple(raw["draws"].items()),
        descriptions=texts["descriptions"], template=texts["template"], insecure=texts["insecure"],
        secure=texts["secure"], imports=rd.texts(raw.get("imports", []), f"{fp}.imports"),
        insecure_imports=rd.texts(raw.get("insecure_imports", []), f"{fp}.insecure_imports"),
        secure_imports=rd.texts(raw.get("secure_imports", []), f"{fp}.secure_imports"), pools=pools,
    )


def load_scenarios(folder: str | Path = SCENARIO_DIR) -> list[tuple[str, str, Scenario]]:
    """``(vuln_class, name, scenario)`` for every scenario file in ``folder``, classes in the
    order ``_common.yaml`` lists them; malformed files raise ``DataError`` (file:line, field)."""
    folder = Path(folder)
    common = _Reader(folder / COMMON_FILE)
    if not isinstance(common.data, dict) or set(common.data) != {"classes", "pools"}:
        raise common.fail("", "expected the keys 'classes' and 'pools'")
    classes = common.texts(common.data["classes"], "classes", allow_empty=False)
    pools = common.data["pools"]
    if not isinstance(pools, dict) or not all(isinstance(v, list) and v for v in pools.values()):
        raise common.fail("pools", "expected a mapping of pool name -> non-empty list")
    files = {p.stem: p for p in folder.glob("*.yaml") if p.name != COMMON_FILE}
    if set(files) != set(classes):
        extra, missing = sorted(set(files) - set(classes)), sorted(set(classes) - set(files))
        raise common.fail("classes", f"class list and scenario files differ (files not listed: {extra}; "
                                     f"listed without a file: {missing})")
    out: list[tuple[str, str, Scenario]] = []
    for vclass in classes:
        rd = _Reader(files[vclass])
        if not isinstance(rd.data, dict) or rd.data.get("vuln_class") != vclass:
            raise rd.fail("vuln_class", f"expected vuln_class: {vclass} (the file's name)")
        raw = rd.data.get("scenarios")
        if not isinstance(raw, list) or not raw:
            raise rd.fail("scenarios", "expected a non-empty list of scenarios")
        out += [(vclass, s.name, s) for s in (_read_scenario(rd, vclass, i, x, pools) for i, x in enumerate(raw))]
    return out


SCENARIOS: list[tuple[str, str, Scenario]] = load_scenarios()  # (vuln_class, scenario name, scenario)
VULN_CLASSES: tuple[str, ...] = tuple(dict.fromkeys(c for c, _, _ in SCENARIOS))
