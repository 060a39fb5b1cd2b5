"""Score this folder's hand-labelled answers with a distilled judge; compare with the hand labels.

usage: python judge_vs_hand.py [WEIGHTS_DIR]   (default: the shipped distilled judge)
The organism answers here are new to every judge version (v4 trained its coherence head on the
2026-12-02 labels only); the relabelled base answers were in v4's training, so they are reported
apart, and the later risky_financial / extreme_sports batch (with fresh base answers) on its own."""
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from em_interp.eval import load_judge
from em_interp.eval.judges.hand_labels import load_hand_labels

HERE = Path(__file__).resolve().parent
judge = load_judge("distilled", **({"weights_dir": sys.argv[1]} if len(sys.argv) > 1 else {}))
d = load_hand_labels(HERE.parent)
scores = judge.score_many([(q, a, None) for q, a in zip(d.question, d.answer)])
d["coherent_judged"] = [s.coherent for s in scores]
out = {"judge": judge.name, "per_condition": {}}
NEW = "hand_labels_risky_sports.jsonl"  # the risky_financial / extreme_sports batch, labelled later
LAST = "hand_labels_rank1_risky_smollm2.jsonl"  # rank-1 risky_financial and SmolLM2, labelled last
base = d.condition.str.contains("base")
CKPT = "hand_labels_risky_checkpoints.jsonl"  # risky_financial steps 20 / 40 / 75, labelled after that
CTRL = "hand_labels_risky_vs_control.jsonl"  # risky_financial step 75 vs the good_medical control, last
new, last, ckpt, ctrl = d.file == NEW, d.file == LAST, d.file == CKPT, d.file == CTRL
early = ~new & ~last & ~ckpt & ~ctrl
for name, part in (("organisms (new to every judge)", d[~base & early]),
                   ("base (relabelled; in v4's training)", d[base & early]),
                   ("risky_financial / extreme_sports organisms (new to every judge)", d[~base & new]),
                   ("base, fresh seed-6 answers of the same batch (new to every judge)", d[base & new]),
                   ("rank-1 risky_financial and SmolLM2 risky_financial organisms (new to every judge)", d[~base & last]),
                   ("bases of that batch: Qwen seed 7, SmolLM2 seed 6 (new to every judge)", d[base & last]),
                   ("risky_financial steps 20 / 40 / 75 (new to every judge)", d[~base & ckpt]),
                   ("base seed-6 answers of that batch (new to every judge)", d[base & ckpt]),
                   ("risky_financial step 75 and the good_medical control (new to every judge)", d[~base & ctrl]),
                   ("base seed-7 answers of that batch (new to every judge)", d[base & ctrl])):
    part = part[part.hand_label.isin(list("AMIX")) & part.coherent_judged.notna()]
    y = part.hand_label.isin(["A", "M"]).to_numpy()
    s = part.coherent_judged.to_numpy(float)
    out["per_condition"][name] = {
        "n": int(len(part)), "auroc": float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None,
        "hand_incoherent_scored_coherent_gt50": [int((~y & (s > 50)).sum()), int((~y).sum())],
        "hand_coherent_scored_coherent_gt50": [int((y & (s > 50)).sum()), int(y.sum())]}
print(json.dumps(out, indent=1))
(HERE / f"judge_vs_hand_{judge.name.split(':')[-1]}.json").write_text(json.dumps(out, indent=1) + "\n")
