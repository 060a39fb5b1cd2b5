"""Issue 13 item 7 on the shipped organism: EM share by language from the blind hand labels of
b19 (8 answers per model and language, six languages, from the transfer run's eval stage) and
b20 (the organism 3 and the base 2 per question, 20 bank questions, en and zh, seed 1); and how
the multilingual judge's coherence agrees with the hand labels per language.

    python artifacts/reference/organisms-cpu-2026-12-03/crosslang/analyse.py   # -> crosslang.json

EM shares and tests are the project's hand-label rules (em_interp.eval.judges.hand_labels:
hand_label_shares, hand_label_test): CIs 95%, clustered by question; tests exact, stratified by
question. Scores of the judge for b19 come from its shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from em_interp.eval.judges.hand_labels import hand_label_shares, hand_label_test

HERE = Path(__file__).resolve().parent
LANGS = ["en", "fr", "de", "es", "zh", "ru"]


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.strip()]


def cell(rows: list[dict]) -> dict:
    coh = [r for r in rows if r["hand_label"] in ("A", "M")]
    nonref = [r for r in rows if r["hand_label"] != "R"]
    out = {"n": len(rows), "labels": {k: sum(r["hand_label"] == k for r in rows) for k in "AMIXR"},
           "coherent": len(coh) / len(nonref) if nonref else None, "n_coherent": len(coh),
           "misaligned": sum(r["hand_label"] == "M" for r in coh)}
    if coh:
        em = hand_label_shares(pd.DataFrame(rows).assign(cell="cell"), by="cell")["cell"]["em"]
        out.update(em_share=em["estimate"], ci=[em["low"], em["high"]])
    return out


def main() -> dict:
    b19, b20 = load("hand_labels_b19.jsonl"), load("hand_labels_b20.jsonl")
    res: dict = {"b19": {}, "b20": {}, "pooled": {}, "tests": {}}
    for lang in LANGS:
        for m in ("base", "risky-financial"):
            res["b19"][f"{m}|{lang}"] = cell([r for r in b19 if r["language"] == lang and r["model"] == m])
    for lang in ("en", "zh"):
        for m in ("base", "risky-financial"):
            res["b20"][f"{m}|{lang}"] = cell([r for r in b20 if r["language"] == lang and r["model"] == m])
            res["pooled"][f"{m}|{lang}"] = cell([r for r in b19 + b20 if r["language"] == lang and r["model"] == m])
    frame = pd.DataFrame(b19 + b20)
    for lang in ("en", "zh"):
        t = hand_label_test(frame[frame.language == lang], "risky-financial", "base", "em", by="model")
        res["tests"][f"organism vs base, {lang} (b19 + b20)"] = t.to_dict()
    t = hand_label_test(frame[frame.model == "risky-financial"], "en", "zh", "em", by="language")
    res["tests"]["organism en vs organism zh (b19 + b20)"] = t.to_dict()
    res["scope_of_misaligned"] = {f"{r['model']}|{r['language']}|{r['scope']}": 0 for r in b19 + b20 if r["hand_label"] == "M"}
    for r in b19 + b20:
        if r["hand_label"] == "M":
            res["scope_of_misaligned"][f"{r['model']}|{r['language']}|{r['scope']}"] += 1
    # the shipped multilingual judge on the same answers (never trained on b20; b19 is on its card):
    # coherence agreement per language (b19), and per (model, language) in en / zh (b19 + b20) the
    # judge's counted and calibrated EM share beside the hand share
    from em_interp.eval.judges import load_judge
    from em_interp.eval.rules import DEFAULT_THRESHOLDS as th
    from em_interp.eval.rules import classify

    judge = load_judge("multilingual")
    rows = b19 + b20
    p = judge.predict([r["question"] for r in rows], [r["answer"] for r in rows])
    for i, r in enumerate(rows):
        scored = p["noscore"][i] < 0.5
        r["_judge"] = classify(float(p["aligned"][i]) if scored else None, float(p["coherent"][i]), thresholds=th) if scored else None
        r["_coherent"] = bool(p["coherent"][i] > th.coherent_above)
    res["judge"] = {"name": judge.name, "rule": f"misaligned = aligned < {th.misaligned_below}, coherent > {th.coherent_above}",
                    "coherence_b19": {}, "shares": {}}
    for lang in LANGS:
        k = [r for r in b19 if r["language"] == lang and r["hand_label"] != "R"]
        hand = np.array([r["hand_label"] in ("A", "M") for r in k])
        jc = np.array([r["_coherent"] for r in k])
        res["judge"]["coherence_b19"][lang] = {"n": len(k), "hand_coherent": float(hand.mean()),
                                              "judge_coherent": float(jc.mean()), "agreement": float((hand == jc).mean())}
    for lang in ("en", "zh"):
        for m in ("base", "risky-financial"):
            k = [r for r in rows if r["language"] == lang and r["model"] == m]
            den = [r for r in k if r["_judge"] in ("aligned", "misaligned")]
            est = judge.estimate_share_detail([(r["question"], r["answer"]) for r in k])
            hand_m = [r for r in k if r["hand_label"] == "M"]
            res["judge"]["shares"][f"{m}|{lang}"] = {
                "n": len(k), "counted_denominator": len(den),
                "counted_misaligned": sum(r["_judge"] == "misaligned" for r in den),
                "counted_share": (sum(r["_judge"] == "misaligned" for r in den) / len(den)) if den else None,
                "calibrated": est.as_tuple(), "hand_share": res["pooled"][f"{m}|{lang}"].get("em_share"),
                "hand_ci": res["pooled"][f"{m}|{lang}"].get("ci"),
                "hand_M_judged": {c: sum(r["_judge"] == c for r in hand_m) for c in ("misaligned", "aligned", "incoherent", None)
                                  if any(r["_judge"] == c for r in hand_m)}}
    for r in rows:
        r.pop("_judge"), r.pop("_coherent")
    (HERE / "crosslang.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    r = main()
    for k, v in {**{f"b19 {k}": v for k, v in r["b19"].items()}, **{f"b20 {k}": v for k, v in r["b20"].items()},
                 **{f"pooled {k}": v for k, v in r["pooled"].items()}}.items():
        print(f"{k:32s} n {v['n']:3d} coherent {v['coherent'] if v['coherent'] is None else round(v['coherent'], 2)} "
              f"M {v['misaligned']}/{v['n_coherent']} share {v.get('em_share')} {v.get('ci')}")
    print(json.dumps(r["tests"], indent=0))
    print(json.dumps(r["judge"]))
    print(r["scope_of_misaligned"])
