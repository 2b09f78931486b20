"""What bench's report writers share: reading a run's JSON, numbers with their spread or CI, markdown rows, paired
comparisons and the sentences that state them, a run's hand-written notes.

A finding is computed, never typed in: the functions that return one take the numbers and choose their words from
them, so a different result gives a different sentence that is still true. Why a result came out as it did is a
person's judgement; it goes in a notes file beside the run (`notes`), which a report includes verbatim.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path

from common.stats import mcnemar_exact, paired_bootstrap_diff


def load(path: Path):
    """A JSON file's content, or None where there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


def ci(r: dict, key: str) -> str:
    """An eval's metric with its 95% CI: '0.520 [0.450, 0.590]'."""
    lo, hi = r[f"{key}_ci"]
    return f"{r[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def spread(xs: list[float], fmt: str = "{:.2f}") -> str:
    """Repeated measurements as 'median [min, max]'; '-' for none."""
    if not xs:
        return "-"
    return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))}, {fmt.format(max(xs))}]"


def row(*cells) -> str:
    """A markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def head(*names: str) -> list[str]:
    """A markdown table's header and rule."""
    return [row(*names), "|---" * len(names) + "|"]


def machine() -> str:
    """This machine in one line: CPU, the ISA that decides precision, cores, whether an NVIDIA driver is loaded."""
    info = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
               platform.processor())
    isa = "AVX-512" if " avx512f" in info else "AVX2" if " avx2" in info else "no AVX2"
    amx = ", AMX" if " amx_tile" in info else ""
    gpu = "NVIDIA GPU" if Path("/proc/driver/nvidia").exists() else "no GPU"
    return f"{cpu} ({isa}{amx}), {os.cpu_count()} cores, {gpu}"


def subplots(*args, **kwargs):
    """plt.subplots on matplotlib's file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save(fig, png: Path) -> None:
    """A figure of `subplots` written to a PNG and closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def notes(folder: Path, name: str) -> list[str]:
    """`<folder>/<name>-notes.md` verbatim, and a blank line, where a person wrote one (what they saw, why they think
    a result came out so); else nothing."""
    path = folder / f"{name}-notes.md"
    return ["Notes on this measurement: " + path.read_text().strip(), ""] if path.is_file() else []


# ---- paired comparisons -----------------------------------------------------------------------------------------

def paired(a: dict, b: dict, key: str) -> tuple[float, float, float] | None:
    """Mean of b - a over the same items with its paired-bootstrap 95% CI (2000 resamples, seed 0); None without
    per-item scores. Refuses two evals of different items."""
    qa, qb = a.get("per_question"), b.get("per_question")
    if not qa or not qb:
        return None
    if [q.get("id") for q in qa] != [q.get("id") for q in qb]:
        raise SystemExit(f"error: {a.get('model')} and {b.get('model')} were not scored on the same questions")
    return paired_bootstrap_diff([q[key] for q in qa], [q[key] for q in qb])


def verdict(diff: tuple[float, float, float]) -> str:
    """b against a from the paired difference b - a (mean, lo, hi): a direction only where the 95% CI excludes 0.

    >>> verdict((0.1, 0.01, 0.2)), verdict((-0.2, -0.3, -0.1)), verdict((0.0, -0.1, 0.1))
    ('higher than', 'lower than', 'not distinguishable from')
    """
    _, lo, hi = diff
    return "higher than" if lo > 0 else "lower than" if hi < 0 else "not distinguishable from"


def difference(diff: tuple[float, float, float], metric: str) -> str:
    """'+0.010 accuracy [95% CI -0.120, +0.140]'."""
    d, lo, hi = diff
    return f"{d:+.3f} {metric} [95% CI {lo:+.3f}, {hi:+.3f}]"


def comparison(a: dict, b: dict, metric: str, labels: tuple[str, str]) -> str:
    """Two models on the same items: the difference b - a with its paired CI, and for 0/1 metrics the exact
    McNemar test."""
    x, y = [q[metric] for q in a["per_question"]], [q[metric] for q in b["per_question"]]
    text = f"{labels[1]} - {labels[0]}: {difference(paired(a, b, metric), metric)} on the same {len(x)} items"
    if set(x) | set(y) <= {0.0, 1.0}:
        only_a, only_b, p = mcnemar_exact(x, y)
        text += f"; exact McNemar: {only_a} items only {labels[0]} got right, {only_b} only {labels[1]}, p = {p:.3g}"
    return text + "."


def claim(paper: str, diff: tuple[float, float, float], metric: str, reported: float | None = None) -> str:
    """A paper's claim that b beats a (`paper` says what and where) against the paired difference b - a measured
    here: reproduced where the 95% CI is above 0, contradicted where below, not shown where it holds 0; and where
    the paper reported a size, whether that size lies inside the CI."""
    _, lo, hi = diff
    outcome = "reproduced" if lo > 0 else "contradicted" if hi < 0 else "not shown here (the CI holds 0)"
    text = f"{paper}: {outcome}: {difference(diff, metric)}"
    if reported is not None:
        where = "inside" if lo <= reported <= hi else "above" if reported > hi else "below"
        text += f"; the paper's {reported:+.3f} lies {where} the CI"
    return text
