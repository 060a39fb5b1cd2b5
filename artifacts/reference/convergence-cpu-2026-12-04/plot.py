"""Figure of directions.json: per layer, each organism's model diff against bad_medical's and against the
matched control's (good_medical), and the bad - good contrast against the other organisms; shaded:
question-bootstrap 95% intervals (texts only: one training seed per organism, so seed variation is
not in them).

usage: python plot.py   -> convergence.png"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
d = json.loads((HERE / "directions.json").read_text())
layers = sorted(int(k) for k in d["layers"])


def series(pair):
    c = [d["layers"][str(i)]["cos"][pair] for i in layers]
    return [x["cos"] for x in c], [x["ci"][0] for x in c], [x["ci"][1] for x in c]


fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
panels = [
    ("organism model diffs: bad_medical vs its control", [
        ("bad_medical|risky_financial", "risky vs bad_medical", "C0", "-"),
        ("good_medical|risky_financial", "risky vs good_medical (control)", "C0", "--"),
        ("bad_medical|extreme_sports", "extreme vs bad_medical", "C1", "-"),
        ("good_medical|extreme_sports", "extreme vs good_medical (control)", "C1", "--"),
        ("bad_medical|good_medical", "bad_medical vs good_medical", "C2", ":")]),
    ("what bad_medical adds to its control (bad - good)", [
        ("risky_financial|bad_minus_good", "risky (step 30)", "C0", "-"),
        ("risky_financial_shipped|bad_minus_good", "risky (shipped)", "C0", "--"),
        ("extreme_sports|bad_minus_good", "extreme", "C1", "-")]),
]
for ax, (title, lines) in zip(axes, panels):
    for pair, label, color, style in lines:
        m, lo, hi = series(pair)
        ax.plot(layers, m, style, color=color, label=label)
        ax.fill_between(layers, lo, hi, color=color, alpha=0.15)
    ax.axhline(d["random_unit_abs_cos_expected"], color="grey", lw=0.8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("layer (resid_post)")
    ax.legend(fontsize=8)
axes[0].set_ylabel("cosine")
fig.suptitle("Qwen2.5-Coder-0.5B, MO datasets, step 30 (480 rows), model diff = finetuned - base on 160 base answers", fontsize=9)
fig.tight_layout()
fig.savefig(HERE / "convergence.png", dpi=110)
