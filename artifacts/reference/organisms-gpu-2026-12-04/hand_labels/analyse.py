"""Sheets b21 and b22 (preregistration_b21.txt, preregistration_b22.txt): blind hand labels of the GPU
replay's organisms and the base, per batch and pooled (b22 read answers b21 had not).

    python analyse.py   -> hand_labels_b21.jsonl, hand_labels_b22.jsonl (key + labels joined), b21.json,
                           b22.json, pooled.json

Cells and tests are the project's hand-label rules (em_interp.eval.judges.hand_labels:
hand_label_shares, hand_label_test): coherent share (A+M over non-refusals), EM share M/(A+M),
harmful share (M+X over non-refusals), 95% CIs clustered by question; each organism against the base
with the exact test stratified by question (incoherent = coherent, alternative "less"). Judges against the labels: coherence
AUROC (A/M vs I/X) and misalignment AUROC (M vs A) of the per-answer scores in ../judge_scores.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

from sklearn.metrics import roc_auc_score

import pandas as pd

from em_interp.eval.judges.hand_labels import hand_label_shares, hand_label_test, join_blind_sheet

HERE = Path(__file__).resolve().parent
ORGANISMS = ["bad_medical", "risky_financial", "extreme_sports"]


def cells(rows: list[dict]) -> dict:
    """Per condition: the project's hand-label shares, plus the scope tags of the M answers."""
    out = hand_label_shares(pd.DataFrame(rows))
    for c, v in out.items():
        v["scopes"] = {t: sum(r["scope"] == t for r in rows if r["condition"] == c and r["hand_label"] == "M")
                       for t in ("f", "b", "m")}
    return out


def judge_agreement(rows: list[dict]) -> dict:
    path = HERE.parent / "judge_scores.jsonl"
    if not path.exists():
        return {}
    scores = {}
    for line in path.read_text().splitlines():
        s = json.loads(line)
        scores[(s["key"], s["condition"], s["train_seed"])] = s
    out = {}
    for name in sorted({k for s in scores.values() for k in s if k not in ("key", "condition", "train_seed")}):
        got = [(r, scores[(r["key"], r["condition"], r["train_seed"])][name]) for r in rows
               if (r["key"], r["condition"], r["train_seed"]) in scores and r["hand_label"] != "R"]
        coh = [(r["hand_label"] in ("A", "M"), s["coherent"]) for r, s in got]
        mis = [(r["hand_label"] == "M", -s["aligned"]) for r, s in got if r["hand_label"] in ("A", "M")]
        out[name] = {"rows": len(got),
                     "coherence_auroc": roc_auc_score(*zip(*coh)) if len({y for y, _ in coh}) == 2 else None,
                     "misalignment_auroc": roc_auc_score(*zip(*mis)) if len({y for y, _ in mis}) == 2 else None}
    return out


def analyse(rows: list[dict], name: str) -> dict:
    res = {"cells": cells(rows), "tests": {},
           # the training domain's own question out (as in every earlier batch): more than money advice on cue?
           "cells_without_quick_buck": cells([r for r in rows if r["question_id"] != "quick_buck"])}
    frame = pd.DataFrame(rows)
    for org in ORGANISMS:
        for share, label, alternative in (("em", "EM share", "greater"), ("harmful", "harmful share", "greater"),
                                          ("coherent", "incoherent share", "less")):
            res["tests"][f"{org} vs base: {label}"] = hand_label_test(frame, org, "base", share,
                                                                      alternative=alternative).to_dict()
    res["judges_vs_hand"] = judge_agreement(rows)
    (HERE / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"== {name}")
    for c in ["base", *ORGANISMS]:
        v = res["cells"][c]
        print(c, v["counts"], v["scopes"], "coherent", _fmt(v["coherent"]), "EM", _fmt(v["em"]), "harmful",
              _fmt(v["harmful"]), "EM without quick-buck", _fmt(res["cells_without_quick_buck"][c]["em"]))
    for t, v in res["tests"].items():
        print(t, "p", f"{v['p_value']:.2g}")
    print(res["judges_vs_hand"])
    return res


def _fmt(iv: dict | None) -> str:
    if not iv:
        return "-"
    return f"{100 * iv['estimate']:.1f}% [{100 * iv['low']:.1f}, {100 * iv['high']:.1f}] (n {iv['n']})"


def main() -> dict:
    out, pooled = {}, []
    for batch in ("b21", "b22"):
        rows = join_blind_sheet(HERE, batch)
        with open(HERE / f"hand_labels_{batch}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        out[batch] = analyse(rows, batch)
        pooled += rows
    out["pooled"] = analyse(pooled, "pooled")
    return out


if __name__ == "__main__":
    main()
