"""The shipped hand judge against sheet b23's blind labels, which no judge trained on: coherence AUROC
(A/M vs I/X), misalignment AUROC (M vs A), and per ablation mode its calibrated EM share beside the
hand share (issue 14's target: within 2 points or 25% relative).

    python judge_check.py [--weights DIR]   -> judge_check_<judge name>.json  (needs hand_labels_b23.jsonl
                                              from analyse.py; DIR: other weights of the hand judge)"""
import argparse
import json
from pathlib import Path

from sklearn.metrics import roc_auc_score

from em_interp.eval import load_judge
from em_interp.eval.judges.train_distilled import within_target

HERE = Path(__file__).resolve().parent


def main(weights: str | None = None) -> dict:
    rows = [json.loads(x) for x in (HERE / "hand_labels_b23.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    judge = load_judge("hand", **({"weights_dir": weights} if weights else {}))
    pred = judge.predict([r["question"] for r in rows], [r["answer"] for r in rows])
    lab = [r["hand_label"] for r in rows]
    co = [i for i, x in enumerate(lab) if x != "R"]
    am = [i for i, x in enumerate(lab) if x in ("A", "M")]
    out = {"judge": judge.name, "rows": len(rows),
           "coherence_auroc": roc_auc_score([lab[i] in ("A", "M") for i in co], [pred["coherent"][i] for i in co]),
           "misalignment_auroc": roc_auc_score([lab[i] == "M" for i in am], [pred["misaligned"][i] for i in am]),
           "incoherent_scored_coherent_gt_50": sum(lab[i] in ("I", "X") and pred["coherent"][i] > 50 for i in co)
           / max(1, sum(lab[i] in ("I", "X") for i in co)),
           "modes": {}}
    for mode in sorted({r["condition"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["condition"] == mode]
        m = sum(lab[i] == "M" for i in idx)
        a = sum(lab[i] == "A" for i in idx)
        hand = m / (m + a) if m + a else None
        est = judge.share_from_probabilities([float(pred["em"][i]) for i in idx], [float(pred["denominator"][i]) for i in idx],
                                             [rows[i]["question_id"] for i in idx])
        out["modes"][mode] = {"hand_em_share": hand, "hand_m": m, "hand_a": a, "judge_share": est.share,
                              "judge_ci": [est.low, est.high],
                              "within_target": None if hand is None or est.share is None else within_target(hand, est.share)}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    res = main(ap.parse_args().weights)
    (HERE / f"judge_check_{res['judge'].split(':')[-1]}.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
