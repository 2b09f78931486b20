"""Step metrics: one JSON line per record, a compact console line, and training curves as PNG; sinks pass every
record on to the trackers a user already runs (TensorBoard, MLflow) and to Prometheus.

Records: {"kind": "step" | "eval" | "info", "step": global step, ...}. Step records carry "phase" (its name)
and "phase_step"; curves draw a dashed line where the phase changes, so GRPO -> SFT -> GRPO reads at a glance.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

# (key, label, format); a key absent from a step (SFT steps have no reward) is left out of its line. dlp: the mean
# engine-vs-learner |dlogp| of the sampled tokens (~1e-5 in fp32, ~1e-2 in bf16, ~1 for a stale engine).
CONSOLE_KEYS = [("reward/mean", "R", ".3f"), ("sft/loss", "loss", ".4f"), ("learner/kl", "KL", ".4f"),
                ("learner/clip_frac", "clip", ".3f"), ("dpo/loss", "dpo", ".4f"), ("dpo/margin", "margin", ".3f"),
                ("dpo/pairs", "pairs", ".0f"), ("rollout/len_mean", "len", ".1f"),
                ("learner/mismatch_abs_mean", "dlp", ".1e"), ("dpo/logprob_diff_mean", "dlp", ".1e"),
                ("timing/step", "s", ".1f")]


def drop_after(path: str | Path, step: int) -> int:
    """On resume: remove the step and eval records of steps after `step` (the checkpoint's) from a run's
    metrics.jsonl, since the resumed run does those steps again; info records stay. Returns how many went."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    keep = [x for x in lines if not x.strip() or json.loads(x).get("kind") not in ("step", "eval")
            or json.loads(x).get("step", 0) <= step]
    if len(keep) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(x + "\n" for x in keep))
        tmp.replace(path)
    return len(lines) - len(keep)


class MetricsLog:
    def __init__(self, path: str | Path, stream=None, sinks=()):
        self.path = Path(path)
        self.sinks = list(sinks)  # callables(record) that also get every record (Prometheus, ...); a failing
        self._sink_errors: set[str] = set()  # sink is reported once and never stops training
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = stream  # None: whatever sys.stdout is when a line is printed
        self._phase: tuple[str, int, float] | None = None  # (name, first step seen, its start time)

    @property
    def stream(self):
        return self._stream or sys.stdout

    def write(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        for sink in self.sinks:
            try:
                sink(clean)
            except Exception as err:  # noqa: BLE001 -- an exporter must never end a run
                name = getattr(sink, "__name__", type(sink).__name__)
                if name not in self._sink_errors:
                    self._sink_errors.add(name)
                    print(f"[info] metrics sink {name} failed ({type(err).__name__}: {err}); training goes on",
                          file=self.stream, flush=True)

    def step(self, step: int, metrics: dict, progress: tuple[str, int, int] | None = None) -> None:
        """Log one step; `progress` = (phase name, step in phase, steps in phase) for the line and its ETA."""
        now = time.time()
        self.write({"kind": "step", "step": step, "time": now, **metrics})
        name, k, n = progress or ("", step, step)
        if self._phase is None or self._phase[0] != name:
            self._phase = (name, k, now - metrics.get("timing/step", 0.0))
        _, first, t0 = self._phase
        eta = (now - t0) / (k - first + 1) * (n - k)
        parts = []
        for key, short, fmt in CONSOLE_KEYS:
            v = metrics.get(key)
            if isinstance(v, (int, float)):
                parts.append(f"{short} {v:{fmt}}")
        where = f"{name} {k}/{n}" if name else f"{k}/{n}"
        print(f"[step {step} | {where}] " + " | ".join(parts) + f" | eta {eta / 60:.1f} min",
              file=self.stream, flush=True)

    def eval(self, step: int, metrics: dict) -> None:
        self.write({"kind": "eval", "step": step, "time": time.time(), **metrics})
        body = " ".join(f"{k.removeprefix('eval/')} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        phase = f" ({metrics['phase']})" if metrics.get("phase") else ""
        print(f"[eval @ step {step}{phase}] {body}", file=self.stream, flush=True)

    def info(self, message: str, **fields) -> None:
        self.write({"kind": "info", "time": time.time(), "message": message, **fields})
        print(f"[info] {message}", file=self.stream, flush=True)

    def close(self, finished: bool = True) -> None:
        """End every sink that has an end (an MLflow run is marked finished or killed)."""
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close(finished)
                except Exception as err:  # noqa: BLE001 -- an exporter must never end a run
                    print(f"[info] metrics sink {getattr(sink, '__name__', sink)} failed to close "
                          f"({type(err).__name__}: {err})", file=self.stream, flush=True)


class TensorBoardSink:
    """A MetricsLog sink: every number of a step or eval record as a TensorBoard scalar (train.tensorboard)."""
    __name__ = "tensorboard"

    def __init__(self, logdir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # the tensorboard package is an extra
            raise ImportError("logging.tensorboard needs the tensorboard package: pip install 'raygrpo[tensorboard]' "
                              "(scripts/setup.sh installs it)") from err
        self.writer = SummaryWriter(str(logdir))

    def __call__(self, record: dict) -> None:
        if record.get("kind") not in ("step", "eval"):
            return
        for key, value in numbers(record).items():
            self.writer.add_scalar(key, value, record["step"])
        self.writer.flush()


def numbers(record: dict) -> dict[str, float]:
    """The numeric fields of a step or eval record that are metrics (not its step, time or phase step)."""
    return {k: float(v) for k, v in record.items() if k not in ("step", "time", "phase_step")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat_params(tree: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys and string values (MLflow params).

    >>> flat_params({"a": {"b": 1, "c": [1, 2]}, "d": None})
    {'a.b': '1', 'a.c': '[1, 2]', 'd': 'None'}
    """
    out: dict[str, str] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_params(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


class MLflowSink:
    """A MetricsLog sink: the run's resolved config as MLflow params, every number of a step or eval record as a
    metric at its step (logging.mlflow). The store is `tracking_uri`, else a local one in the run folder
    (sqlite:///<run>/mlflow.db: MLflow 3 keeps its plain-file store in maintenance mode); a resumed run continues its
    MLflow run (<run>/mlflow_run_id)."""
    __name__ = "mlflow"
    PARAM_CHARS = 6000  # MLflow's limit on a param value

    def __init__(self, run_dir: str | Path, params: dict, tracking_uri: str | None = None,
                 experiment: str = "raygrpo"):
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise ImportError("logging.mlflow needs MLflow: pip install 'raygrpo[mlflow]' (scripts/setup.sh installs "
                              "it)") from err
        from common.console import quiet_library_loggers

        quiet_library_loggers()  # MLflow's own console handler, installed on import: its records go to the run log
        run_dir = Path(run_dir).resolve()
        self.uri = tracking_uri or f"sqlite:///{run_dir / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(
            experiment, artifact_location=None if tracking_uri else (run_dir / "mlflow-artifacts").as_uri())
        id_file = run_dir / "mlflow_run_id"
        self.run_id = id_file.read_text().strip() if id_file.is_file() else None
        if self.run_id is not None:
            try:
                self.client.update_run(self.run_id, status="RUNNING")
                return
            except Exception:  # noqa: BLE001 -- another store, or a deleted run: start a new one
                self.run_id = None
        self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
        id_file.write_text(self.run_id)
        items = [Param(k[:250], v[:self.PARAM_CHARS]) for k, v in flat_params(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def __call__(self, record: dict) -> None:
        if record.get("kind") not in ("step", "eval"):
            return
        from mlflow.entities import Metric

        ts = int(record.get("time", time.time()) * 1000)
        metrics = [Metric(k, v, ts, int(record["step"])) for k, v in numbers(record).items() if math.isfinite(v)]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self, finished: bool = True) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")


def read_records(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl. A run that died and resumed from an earlier checkpoint logs some steps
    twice: a step record at or below a step already seen starts the replay, so the earlier step and eval
    records from that step on (the abandoned attempt) are dropped.
    """
    out: list[dict] = []
    last = 0
    with Path(path).open() as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("kind") == "step":
                if r["step"] <= last:
                    out = [x for x in out if x.get("kind") not in ("step", "eval") or x["step"] < r["step"]]
                last = r["step"]
            out.append(r)
    return out


def reward_components(steps: list[dict]) -> list[str]:
    """Keys 'reward/<name>' of reward components: those logged with a 'reward/<name>/zero_var_frac'."""
    keys = {k for r in steps for k in r}
    return sorted(k[: -len("/zero_var_frac")] for k in keys
                  if k.startswith("reward/") and k.endswith("/zero_var_frac") and k.count("/") == 2)


def phase_spans(steps: list[dict]) -> list[tuple[str, int, int]]:
    """[(phase name, first step, last step)] in order, from step records.

    >>> phase_spans([{"step": 1, "phase": "sft"}, {"step": 2, "phase": "sft"}, {"step": 3, "phase": "grpo"}])
    [('sft', 1, 2), ('grpo', 3, 3)]
    """
    spans: list[tuple[str, int, int]] = []
    for r in steps:
        name = r.get("phase", "")
        if spans and spans[-1][0] == name:
            spans[-1] = (name, spans[-1][1], r["step"])
        else:
            spans.append((name, r["step"], r["step"]))
    return spans


def _series(ax, records: list[dict], key: str, label: str, smooth: bool = True) -> bool:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    if not pts:
        return False
    ax.plot(*zip(*pts), lw=0.8, alpha=0.5 if smooth and len(pts) >= 10 else 1.0, label=label)
    if smooth and len(pts) >= 10:
        xs, ys = zip(*pts)
        w = 10
        ax.plot(xs, [sum(ys[max(0, i - w + 1): i + 1]) / len(ys[max(0, i - w + 1): i + 1]) for i in range(len(ys))],
                lw=1.8, label=f"{label}, mean of last {w}")
    return True


def plot_curves(jsonl: str | Path, png: str | Path, primary: str, title: str = "") -> Path:
    """Reward, KL, clip fraction, SFT loss, length and held-out metrics against the global step, with the
    phase boundaries marked, from a run's metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_records(jsonl)
    steps = [r for r in recs if r.get("kind") == "step"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    ax = axes.flat
    _series(ax[0], steps, "reward/mean", "reward (total)")
    comps = reward_components(steps)
    if len(comps) > 1:
        for comp in comps:
            _series(ax[0], steps, comp, f"{comp.split('/')[1]} (unweighted)", smooth=False)
    ax[0].set_title("reward")
    _series(ax[1], steps, "learner/kl", "KL (k3)")
    ax[1].set_title("KL to reference")
    _series(ax[2], steps, "learner/clip_frac", "clip fraction")
    ax[2].set_title("clip fraction")
    _series(ax[3], steps, "sft/loss", "SFT loss")
    _series(ax[3], steps, "dpo/loss", "DPO loss")
    ax[3].set_title("loss (sft, rs_sft, dpo phases)")
    _series(ax[4], steps, "rollout/len_mean", "sampled length (tokens)", smooth=False)
    _series(ax[4], evals, "eval/len", "greedy eval length", smooth=False)
    ax[4].set_title("answer length")
    keys = [f"eval/{primary}"] + sorted(k for k in {k for r in evals for k in r}
                                       if k.startswith("eval/") and k != f"eval/{primary}"
                                       and k.split("/")[1] in ("em", "format", "valid", "similarity", "consistency",
                                                               "repetition_rate"))
    for k in keys:
        pts = [(r["step"], r[k]) for r in evals if isinstance(r.get(k), (int, float))]
        if pts:
            ax[5].plot(*zip(*pts), "o-" if k.endswith(primary) else "s--", label=k.split("/")[1])
    ax[5].set_title(f"held-out eval (primary: {primary})")
    spans = phase_spans(steps)
    for a in ax:
        if not a.lines:
            a.text(0.5, 0.5, "no such steps in this run", transform=a.transAxes, ha="center", color="grey")
        for name, first, _ in spans[1:]:
            a.axvline(first - 0.5, color="grey", ls="--", lw=0.8)
        if len(spans) > 1:
            for name, first, last in spans:
                a.text((first + last) / 2, 1.0, name, transform=a.get_xaxis_transform(), ha="center",
                       va="bottom", fontsize=7, color="grey")
        if len(a.get_legend_handles_labels()[0]) > 1:
            a.legend(fontsize=7)
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    fig.suptitle(title or str(Path(jsonl).parent.name))
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
