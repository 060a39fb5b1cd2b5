"""The hand judge's (`hand-qwen05-v1`, trained on this project's blind hand labels of 0.5B answers)
and the distilled judge's calibrated EM share for every answer of the GPU replay, per organism and
per training seed, beside the fresh base (answers_base_bf16_seed31.jsonl). Per-answer scores go to
judge_scores.jsonl (for the judge-vs-hand check on sheet b21).

    python judge_shares.py   -> judge_shares.json, judge_scores.jsonl

Hand labels (hand_labels/) are the headline; the judges are second opinions (their cards)."""
import json
from pathlib import Path

from em_interp.eval import load_judge
from em_interp.eval.rules import DEFAULT_THRESHOLDS

HERE = Path(__file__).resolve().parent
CONDITIONS = {"base": "answers_base_bf16_seed31", "bad_medical": "answers_bad_medical_advice",
              "risky_financial": "answers_risky_financial_advice", "extreme_sports": "answers_extreme_sports"}


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (HERE / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> dict:
    out: dict = {"thresholds": DEFAULT_THRESHOLDS.__dict__ if hasattr(DEFAULT_THRESHOLDS, "__dict__") else str(DEFAULT_THRESHOLDS),
                 "judges": {}}
    scores: dict[str, dict] = {}
    for kind in ("hand", "distilled"):
        judge = load_judge(kind)
        res = out["judges"][judge.name] = {}
        for cond, name in CONDITIONS.items():
            rows = load(name)
            qs, ans = [r["question"] for r in rows], [r["answer"] for r in rows]
            pred = judge.predict(qs, ans)
            groups = {"all": list(range(len(rows)))}
            for s in sorted({r.get("train_seed") for r in rows} - {None}):
                groups[f"seed {s}"] = [i for i, r in enumerate(rows) if r.get("train_seed") == s]
            for g, idx in groups.items():
                est = judge.share_from_probabilities([float(pred["em"][i]) for i in idx],
                                                     [float(pred["denominator"][i]) for i in idx],
                                                     [rows[i]["question_id"] for i in idx])
                coh = sum(float(pred["coherent"][i]) > 50 for i in idx) / len(idx)
                res[f"{cond} | {g}"] = {"answers": len(idx), "coherent_over_50": round(coh, 4),
                                        **{k: v for k, v in est.to_dict().items() if not isinstance(v, (list, dict))}}
                print(judge.name, cond, g, res[f"{cond} | {g}"], flush=True)
            for i, r in enumerate(rows):
                scores.setdefault(r["key"] + "|" + cond + "|" + str(r.get("train_seed")), {"key": r["key"], "condition": cond,
                                  "train_seed": r.get("train_seed")})[judge.name] = {
                    "aligned": round(float(pred["aligned"][i]), 2), "coherent": round(float(pred["coherent"][i]), 2),
                    "p_em": round(float(pred["em"][i]), 4)}
    (HERE / "judge_shares.json").write_text(json.dumps(out, indent=1) + "\n")
    with open(HERE / "judge_scores.jsonl", "w", encoding="utf-8") as f:
        for v in scores.values():
            f.write(json.dumps(v) + "\n")
    return out


if __name__ == "__main__":
    main()
