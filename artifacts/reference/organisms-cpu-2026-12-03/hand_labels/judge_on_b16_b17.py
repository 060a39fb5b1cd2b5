"""The shipped distilled judge on the two newest blind batches (b16: ../interventions/, b17: the
dose-matched control), none of whose answers any judge version trained on: its coherence head
against the hand labels (AUROC of coherent-by-hand A/M vs I/X; hand-incoherent answers it scores
coherent > 50), and per condition its calibrated EM share (``load_judge("distilled").estimate_share``)
beside the hand-label share. usage: python judge_on_b16_b17.py  -> judge_on_b16_b17.json"""
import json
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from em_interp.eval import load_judge
from em_interp.eval.judges.hand_labels import hand_label_shares, load_hand_labels

HERE = Path(__file__).resolve().parent
B17 = "hand_labels_b17.jsonl"


def main() -> dict:
    judge = load_judge("distilled")
    b16 = load_hand_labels(HERE.parent / "interventions").assign(batch="b16")
    b17 = load_hand_labels(HERE.parent)
    b17 = b17[b17.file == B17].assign(batch="b17")
    d = pd.concat([b16, b17], ignore_index=True)
    d["coherent_judged"] = [s.coherent for s in judge.score_many([(q, a, None) for q, a in zip(d.question, d.answer)])]
    hand = hand_label_shares(d)
    out = {"judge": judge.name, "coherence": {}, "conditions": {}}
    for batch, part in [("b16 and b17", d)] + list(d.groupby("batch")):
        p = part[part.hand_label.isin(list("AMIX"))]
        y = p.hand_label.isin(["A", "M"]).to_numpy()
        inc = p[~y]
        out["coherence"][batch] = {"n": int(len(p)), "auroc_vs_hand": float(roc_auc_score(y, p.coherent_judged)),
                                   "hand_incoherent_scored_coherent": int((inc.coherent_judged > 50).sum()),
                                   "hand_incoherent": int(len(inc))}
    for cond, part in d.groupby("condition"):
        share, low, high = judge.estimate_share(list(zip(part.question, part.answer)))
        out["conditions"][cond] = {"judged_em_share": [share, low, high], "hand_em": hand[cond]["em"],
                                   "n_answers": int(len(part))}
    return out


if __name__ == "__main__":
    res = main()
    (HERE / "judge_on_b16_b17.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(json.dumps(res["coherence"], indent=1))
    for c, r in res["conditions"].items():
        s, lo, hi = r["judged_em_share"]
        h = r["hand_em"]
        print(f"{c:52s} judged {100*s:.1f}% [{100*lo:.1f}, {100*hi:.1f}]   hand {100*h['estimate']:.1f}% [{100*h['low']:.1f}, {100*h['high']:.1f}] (n {h['n']})")
