"""The experiment behind docs/results.md: base -> SFT -> GRPO, then every evaluation of the report.

  1. train: jobs/grpo_mlqa.py with the config (an sft phase, then grpo with periodic eval on the validation split,
     keeping GRPO-best by validation F1 and GRPO-final); skipped when the run dir holds a finished run,
     resumed when it holds a partial one;
  2. English test split (held out before training, never used for selection): base, SFT, GRPO-best,
     GRPO-final, greedy, with bootstrap CIs;
  3. sampling distribution of GRPO-best on the first `--sample-questions` test questions (n samples);
  4. zero-shot cross-lingual: base and GRPO-best on XQuAD de/es/vi/zh/ar/hi (the English test split's
     questions, translated) and MLQA de dev;
  5. perplexity of every checkpoint on held-out general English (jobs/perplexity.py).
Every result is a JSON file in <run>/eval/, written by the command printed beside it, so
`python bench/results_report.py <run>` can rebuild the report from the run dir alone. Existing results are
kept (delete a file to redo it).

  python jobs/experiment.py --config jobs/configs/report_xquad_en.yaml
  python jobs/experiment.py --config jobs/configs/report_xquad_en_4x.yaml --parts test   # training + Table I only
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.config import load_config  # noqa: E402

PARTS = {"test", "sampling", "cross", "perplexity"}
CROSS_LINGUAL = ["xquad:de", "xquad:es", "xquad:vi", "xquad:zh", "xquad:ar", "xquad:hi", "mlqa-de"]


def sh(cmd: list[str], log: Path, tag: str = "experiment") -> None:
    """Run a step as its own process (each frees its engines' memory on exit); log its command."""
    line = " ".join(cmd)
    print(f"[{tag}] $ {line}", flush=True)
    with log.open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} $ {line}\n")
    subprocess.run(cmd, check=True, cwd=ROOT)


def checkpoints(run: Path, policy: str, sft_phase: str | None) -> dict[str, str]:
    ck = {"base": policy}
    if sft_phase:
        ck["sft"] = str(run / "checkpoints" / sft_phase)
    ck.update({"grpo-best": str(run / "checkpoints" / "best"), "grpo-final": str(run / "checkpoints" / "last")})
    return ck


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--cross-limit", type=int, default=150, help="questions per cross-lingual set (>= 100)")
    p.add_argument("--samples", type=int, default=5, help="sampled answers per question for the distribution")
    p.add_argument("--sample-questions", type=int, default=200)
    p.add_argument("--parts", default="test,sampling,cross,perplexity",
                   help="evaluations to run after training, comma-separated (test = the English test split)")
    p.add_argument("overrides", nargs="*", help="section.key=value for the training job")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    if parts - PARTS:
        p.error(f"--parts: unknown {sorted(parts - PARTS)}; choose from {', '.join(sorted(PARTS))}")
    cfg = load_config(args.config, args.overrides)
    run = Path(cfg.train.output_dir) / (cfg.train.run_name or "experiment")
    py, out = sys.executable, run / "eval"

    summary = run / "summary.json"
    last = run / "checkpoints" / "last" / "driver_state.json"
    done = summary.is_file() and last.is_file() and json.loads(last.read_text())["phase"] >= len(cfg.train.phases)
    if not done:
        train = [py, "jobs/grpo_mlqa.py", "--config", args.config, *args.overrides]
        partial = (run / "checkpoints" / "last" / "driver_state.json").is_file()
        run.mkdir(parents=True, exist_ok=True)
        sh(train + (["--resume"] if partial else []), run / "commands.log")
    out.mkdir(parents=True, exist_ok=True)
    log = run / "commands.log"
    sft = [n for n, p in zip(cfg.train.phase_names(), cfg.train.phases) if p.kind == "sft"]
    ck = checkpoints(run, cfg.model.policy, sft[0] if sft else None)

    for name, model in ck.items():
        target = out / f"test-{name}.json"
        if "test" in parts and not target.is_file():
            sh([py, "jobs/eval.py", "--model", model, "--run", str(run), "--split", "test", "--out", str(target)], log)
    target = out / "sampling-grpo-best.json"
    if "sampling" in parts and not target.is_file():
        sh([py, "jobs/eval.py", "--model", ck["grpo-best"], "--run", str(run), "--split", "test",
            "--limit", str(args.sample_questions), "--samples", str(args.samples), "--out", str(target)], log)
    for source in CROSS_LINGUAL if "cross" in parts else []:
        for name in ("base", "grpo-best"):
            target = out / f"cross-{source.replace(':', '-')}-{name}.json"
            # XQuAD is parallel: take the English test split's questions in each language, so nothing the
            # model trained on (in English) is scored. MLQA-de shares no questions with XQuAD: its first N.
            split = ["--run", str(run), "--split", "test"] if source.startswith("xquad:") else []
            if not target.is_file():
                sh([py, "jobs/eval.py", "--model", ck[name], "--data", source, *split, "--limit",
                    str(args.cross_limit), "--out", str(target)], log)
    target = out / "perplexity.json"
    if "perplexity" in parts and not target.is_file():
        sh([py, "jobs/perplexity.py", *[a for m in ck.values() for a in ("--model", m)], "--out", str(target)], log)
    print(f"[experiment] done; report: python bench/results_report.py {run}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
