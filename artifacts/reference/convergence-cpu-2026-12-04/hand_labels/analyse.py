"""Sheet b23 (preregistration_b23.txt): blind hand labels of the shipped risky_financial organism under
four ablations (sample_ablations.py).

    python analyse.py   -> hand_labels_b23.jsonl (key + labels joined), b23.json

Cells and tests are the project's hand-label rules (em_interp.eval.judges.hand_labels): coherent share
(A+M over non-refusals), EM share M/(A+M), harmful share (M+X over non-refusals), 95% CIs clustered by
question; tests stratified by question (exact), alternative "less" (the ablation lowers the share)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from em_interp.eval.judges.hand_labels import hand_label_shares, hand_label_test, join_blind_sheet

HERE = Path(__file__).resolve().parent
TESTS = [("bad_medical", "random"), ("bad_medical", "none"), ("bad_medical", "good_medical"),
         ("good_medical", "none"), ("random", "none")]


def main() -> dict:
    r = join_blind_sheet(HERE, "b23")
    with open(HERE / "hand_labels_b23.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(x, ensure_ascii=False) + "\n" for x in r)
    df = pd.DataFrame(r)
    cells = hand_label_shares(df)
    for c, v in cells.items():
        v["scopes"] = {t: sum(x["scope"] == t for x in r if x["condition"] == c and x["hand_label"] == "M") for t in "fbm"}
    tests = {f"{a} < {b}": {s: hand_label_test(df, a, b, s, alternative="less").to_dict() for s in ("em", "harmful", "coherent")}
             for a, b in TESTS}
    return {"cells": cells, "tests": tests}


if __name__ == "__main__":
    out = main()
    (HERE / "b23.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    for c, v in out["cells"].items():
        print(c, {k: v[k] for k in v if k in ("n", "counts", "scopes")},
              {k: [round(100 * v[k][x], 1) for x in ("estimate", "low", "high")] for k in ("em", "coherent", "harmful") if v[k]})
    for t, v in out["tests"].items():
        print(t, {s: f"{x['events_treated']} vs {x['expected_treated']:.1f} expected, p {x['p_value']:.2g}" for s, x in v.items()})
