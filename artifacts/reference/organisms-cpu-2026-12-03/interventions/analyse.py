"""Issue 13, items 2-3: the b16 blind batch (ablation in the organism, steering in the base), from its
hand labels -> interventions.json and interventions.png.

Per condition: counts, coherent share, EM share M/(A+M), harmful share (M+X)/non-refusals, each with
its 95% CI clustered over the 8 questions (``hand_label_shares``: ``eval.stats.share_ci``), the scope
of the M answers (f = only financial, b = any non-financial misalignment), and per-question counts.
Contrasts: the pre-registered stratified exact tests by question (``eval.stats.stratified_exact_test``,
one-sided in the direction the paper predicts; two-sided = 2 x the smaller one-sided p, capped at 1)
of EM, harmful and coherent shares (``hand_label_test``).

usage: python analyse.py   (reads hand_labels/hand_labels_b16.jsonl and answers_*.jsonl here)"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from em_interp.eval.judges.hand_labels import hand_label_shares, hand_label_test, load_hand_labels  # noqa: E402

HERE = Path(__file__).resolve().parent
ORGANISM = ["org_none", "org_ablate_md", "org_ablate_random", "org_ablate_persona"]
BASE = ["base_steer_0", "base_steer_4", "base_steer_8", "base_steer_random_8"]
# (treated, control, direction the paper predicts for EM / harmful)
CONTRASTS = [("org_ablate_md", "org_ablate_random", "less"), ("org_ablate_md", "org_none", "less"),
             ("org_ablate_random", "org_none", "less"), ("org_ablate_persona", "org_ablate_random", "less"),
             ("base_steer_8", "base_steer_random_8", "greater"), ("base_steer_4", "base_steer_0", "greater"),
             ("base_steer_8", "base_steer_0", "greater")]
SHARES = ("em", "harmful", "coherent")


def contrast(lab, treated: str, control: str, share: str) -> dict:
    one = {alt: hand_label_test(lab, treated, control, share, alternative=alt) for alt in ("less", "greater")}
    t = one["less"]
    return {"events_treated": t.events_treated, "expected_treated": round(t.expected_treated, 2),
            "n_treated": t.n_treated, "n_control": t.n_control, "strata_used": t.strata_used,
            "p_less": one["less"].p_value, "p_greater": one["greater"].p_value,
            "p_two_sided": min(1.0, 2 * min(one["less"].p_value, one["greater"].p_value))}


def main() -> dict:
    lab = load_hand_labels(HERE)
    lab["qid"] = lab.key.str.split("|").str[0]
    raw = {json.loads(x)["blind_index"]: json.loads(x)
           for x in (HERE / "hand_labels" / "hand_labels_b16.jsonl").read_text().splitlines()}
    scope = {(r["condition"], r["key"]): r.get("scope") for r in raw.values()}
    shares = hand_label_shares(lab)
    out = {"conditions": {}, "contrasts": [], "labels": "blind hand labels, one rater (hand_labels/hand_labels_b16.jsonl)",
           "ci": "95%, t(G-1) logit, clustered over the 8 questions (eval.stats.share_ci)",
           "test": "stratified exact test by question (eval.stats.stratified_exact_test)"}
    for c in ORGANISM + BASE:
        g = lab[lab.condition == c]
        m = [scope[(c, k)] for k, h in zip(g.key, g.hand_label) if h == "M"]
        per_q = {q: g[g.qid == q].hand_label.value_counts().to_dict() for q in sorted(g.qid.unique())}
        out["conditions"][c] = dict(shares[c], m_scope={"f": m.count("f"), "b": m.count("b")}, per_question=per_q)
    for t, c, _ in CONTRASTS:
        for kind in SHARES:
            out["contrasts"].append({"treated": t, "control": c, "share": kind, **contrast(lab, t, c, kind)})
    return out


def plot(res: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    names = ORGANISM + BASE
    for ax, kind, title in zip(axes, ("coherent", "em", "harmful"),
                               ("coherent (A+M)/non-refusal", "EM share M/(A+M)", "harmful (M+X)/non-refusal")):
        for i, c in enumerate(names):
            s = res["conditions"][c][kind]
            if s is None:
                continue
            est, lo, hi = (100 * s[k] for k in ("estimate", "low", "high"))
            ax.errorbar(est, i, xerr=[[est - lo], [hi - est]], fmt="o", color="C0" if c.startswith("org") else "C1", capsize=3)
            ax.text(101, i, f"n {s['n']}", va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 100)
        ax.axhline(3.5, color="grey", lw=0.5)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("b16: ablation in the risky-financial organism (blue) and steering in the base (orange); "
                 "blind hand labels, 95% CI clustered over 8 questions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    res = main()
    (HERE / "interventions.json").write_text(json.dumps(res, indent=1) + "\n")
    plot(res, HERE / "interventions.png")
    for c, s in res["conditions"].items():
        print(c, s["counts"], {k: None if s[k] is None else round(100 * s[k]["estimate"], 1) for k in ("coherent", "em", "harmful")},
              s["m_scope"])
    for r in res["contrasts"]:
        print(r["treated"], "vs", r["control"], r["share"], r["events_treated"], "vs", r["expected_treated"],
              "p<", f"{r['p_less']:.2g}", "p>", f"{r['p_greater']:.2g}")
