"""Step metrics: one JSON line per record, a compact console line, and training curves as PNG."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

CONSOLE_KEYS = [("reward/mean", "R", 3), ("reward/qa/f1", "F1", 3), ("learner/kl", "KL", 4),
                ("learner/clip_frac", "clip", 3), ("rollout/len_mean", "len", 1),
                ("learner/logprob_diff_max", "dlp", 1), ("timing/step", "s", 1)]


class MetricsLog:
    def __init__(self, path: str | Path, total_steps: int, stream=sys.stdout):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.total = total_steps
        self.stream = stream
        self.t0 = time.time()
        self.first_step: int | None = None

    def write(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")

    def step(self, step: int, metrics: dict) -> None:
        self.write({"kind": "step", "step": step, "time": time.time(), **metrics})
        if self.first_step is None:
            self.first_step, self.t0 = step, time.time() - metrics.get("timing/step", 0.0)
        done = step - self.first_step + 1
        eta = (time.time() - self.t0) / done * (self.total - step)
        parts = []
        for key, short, nd in CONSOLE_KEYS:
            if key in metrics:
                v = metrics[key]
                parts.append(f"{short} {v:.{nd}e}" if key.endswith("diff_max") else f"{short} {v:.{nd}f}")
        print(f"[step {step}/{self.total}] " + " | ".join(parts) + f" | eta {eta / 60:.1f} min",
              file=self.stream, flush=True)

    def eval(self, step: int, metrics: dict) -> None:
        self.write({"kind": "eval", "step": step, "time": time.time(), **metrics})
        body = " ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        phase = f" ({metrics['phase']})" if metrics.get("phase") else ""
        print(f"[eval @ step {step}{phase}] {body}", file=self.stream, flush=True)

    def info(self, message: str, **fields) -> None:
        self.write({"kind": "info", "time": time.time(), "message": message, **fields})
        print(f"[info] {message}", file=self.stream, flush=True)


def read_records(path: str | Path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def reward_components(steps: list[dict]) -> list[str]:
    """Keys 'reward/<name>' of reward components: those logged with a 'reward/<name>/zero_var_frac'."""
    keys = steps[0].keys() if steps else []
    return sorted(k[: -len("/zero_var_frac")] for k in keys
                  if k.startswith("reward/") and k.endswith("/zero_var_frac") and k.count("/") == 2)


def plot_curves(jsonl: str | Path, png: str | Path, title: str = "") -> Path:
    """Reward, KL, clip fraction and eval F1/EM against step, from a run's metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_records(jsonl)
    steps = [r for r in recs if r.get("kind") == "step"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    panels = [("reward/mean", "reward (mean)"), ("learner/kl", "KL to reference (k3)"),
              ("learner/clip_frac", "clip fraction"), (None, "eval (greedy, held-out)")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, label) in zip(axes.flat, panels):
        if key is None:
            for k, style in (("eval/f1", "o-"), ("eval/em", "s--")):
                pts = [(r["step"], r[k]) for r in evals if r.get(k) is not None]
                if pts:
                    ax.plot(*zip(*pts), style, label=k.split("/")[1].upper())
            ax.legend()
        else:
            pts = [(r["step"], r[key]) for r in steps if r.get(key) is not None]
            if key == "reward/mean" and len(reward_components(steps)) > 1:
                for comp in reward_components(steps):  # weighted components, unsmoothed
                    cpts = [(r["step"], r[comp]) for r in steps if r.get(comp) is not None]
                    ax.plot(*zip(*cpts), lw=1.0, ls=":", label=f"{comp.split('/')[1]} (unweighted)")
            if pts:
                ax.plot(*zip(*pts), lw=0.8, alpha=0.5, label="per step")
                if len(pts) >= 10:
                    xs, ys = zip(*pts)
                    w = 10
                    smooth = [sum(ys[max(0, i - w + 1): i + 1]) / len(ys[max(0, i - w + 1): i + 1])
                              for i in range(len(ys))]
                    ax.plot(xs, smooth, lw=1.8, label=f"mean of last {w}")
            if len(ax.get_legend_handles_labels()[0]) > 1:
                ax.legend(fontsize=8)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title or str(Path(jsonl).parent.name))
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
