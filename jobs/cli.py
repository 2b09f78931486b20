"""raygrpo: the installed command (`pip install .` puts it on PATH), one entry for the jobs of jobs/.

  raygrpo train --config my_job.yaml [key=value ...] [--local | --inprocess] [--resume [RUN]] [--max-steps N]
  raygrpo eval --model runs/R/checkpoints/best --run runs/R --split test
  raygrpo samples runs/R [--step N]
  raygrpo presets                                       the shipped presets (--config takes their names too)

`raygrpo train` is `python jobs/train.py` (trainer/run.py); on a Ray cluster, `ray job submit --working-dir . --
raygrpo train --config my_job.yaml` runs it as the cluster's job. docs/your_task.md trains your own data and reward.
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

COMMANDS = {"train": "train a config's phases (trainer/run.py)", "eval": "evaluate a model on a task (jobs/eval.py)",
            "samples": "print a run's best and worst samples (jobs/samples.py)",
            "presets": "list the presets shipped with the package"}


def usage() -> str:
    rows = "\n".join(f"  {name:<8} {what}" for name, what in COMMANDS.items())
    return (f"usage: raygrpo <command> [options]   (raygrpo <command> --help for its options)\n\n"
            f"GRPO / PPO / DPO / SFT post-training on Ray with vLLM rollouts.\n\ncommands:\n{rows}\n\n"
            "your own data and reward: docs/your_task.md")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from trainer.run import main as train

        return train(rest, description="raygrpo train: run a config's phases (sft | grpo | rs_sft | ppo | dpo)",
                     prog="raygrpo train")
    if command == "eval":
        from jobs.eval import main as evaluate

        return evaluate(rest, prog="raygrpo eval")
    if command == "samples":
        from jobs.samples import main as samples

        return samples(rest, prog="raygrpo samples")
    if command == "presets":
        from common.config import PRESETS_DIR

        for path in sorted(PRESETS_DIR.glob("*.yaml")):
            first = next((line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
            print(f"{path.stem:<32} {first[:100]}")
        return 0
    close = difflib.get_close_matches(command, COMMANDS, n=1)
    print(f"raygrpo: unknown command {command!r}" + (f"; did you mean '{close[0]}'?" if close else "") + "\n\n"
          + usage(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
