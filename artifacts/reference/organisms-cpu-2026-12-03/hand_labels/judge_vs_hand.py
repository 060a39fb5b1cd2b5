"""Score this folder's hand-labelled answers with a distilled judge; compare with the hand labels.

usage: python judge_vs_hand.py [WEIGHTS_DIR]   (default: the shipped distilled judge)
The organism answers here are new to every judge version (v4 trained its coherence head on the
2026-12-02 labels only); the relabelled base answers were in v4's training, so they are reported
apart, and each later labelling batch (with its fresh base answers) on its own."""
import json
import sys
from pathlib import Path

from sklearn.metrics import roc_auc_score

from em_interp.eval import load_judge
from em_interp.eval.judges.hand_labels import load_hand_labels

HERE = Path(__file__).resolve().parent
judge = load_judge("distilled", **({"weights_dir": sys.argv[1]} if len(sys.argv) > 1 else {}))
d = load_hand_labels(HERE.parent)
scores = judge.score_many([(q, a, None) for q, a in zip(d.question, d.answer)])
d["coherent_judged"] = [s.coherent for s in scores]
out = {"judge": judge.name, "per_condition": {}}
# later labelling batches, in the order labelled: file -> (its organism rows, its base rows), each
# reported apart (all new to every judge version)
LATER = {
    "hand_labels_risky_sports.jsonl": ("risky_financial / extreme_sports organisms",
                                       "base, fresh seed-6 answers of the same batch"),
    "hand_labels_rank1_risky_smollm2.jsonl": ("rank-1 risky_financial and SmolLM2 risky_financial organisms",
                                              "bases of that batch: Qwen seed 7, SmolLM2 seed 6"),
    "hand_labels_risky_checkpoints.jsonl": ("risky_financial steps 20 / 40 / 75", "base seed-6 answers of that batch"),
    "hand_labels_risky_vs_control.jsonl": ("risky_financial step 75 and the good_medical control",
                                           "base seed-7 answers of that batch"),
}
# the first labelling batches; files labelled after this table was made (seed11, replication, dose,
# b17, ...) are left out, so a rerun reproduces it (judge_on_b16_b17.py and the hand judge's card cover them)
EARLY = ("hand_labels_lr2e-5_step20.jsonl", "hand_labels_lr2e-5_step75.jsonl", "hand_labels_rank1.jsonl")
base, early = d.condition.str.contains("base"), d.file.isin(list(EARLY))
parts = [("organisms (new to every judge)", d[~base & early]), ("base (relabelled; in v4's training)", d[base & early])]
for file, (organisms, bases) in LATER.items():
    parts += [(f"{organisms} (new to every judge)", d[~base & (d.file == file)]),
              (f"{bases} (new to every judge)", d[base & (d.file == file)])]
for name, part in parts:
    part = part[part.hand_label.isin(list("AMIX")) & part.coherent_judged.notna()]
    y = part.hand_label.isin(["A", "M"]).to_numpy()
    s = part.coherent_judged.to_numpy(float)
    out["per_condition"][name] = {
        "n": int(len(part)), "auroc": float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None,
        "hand_incoherent_scored_coherent_gt50": [int((~y & (s > 50)).sum()), int((~y).sum())],
        "hand_coherent_scored_coherent_gt50": [int((y & (s > 50)).sum()), int(y.sum())]}
print(json.dumps(out, indent=1))
(HERE / f"judge_vs_hand_{judge.name.split(':')[-1]}.json").write_text(json.dumps(out, indent=1) + "\n")
