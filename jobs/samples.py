"""Print one training step's best and worst samples from a run's rollout records (<run>/rollouts/*.parquet).

    python jobs/samples.py runs/smoke                 # the last recorded step
    python jobs/samples.py runs/smoke --step 12 -n 3  # step 12, three best and three worst
    python jobs/samples.py runs/smoke --steps         # which steps are recorded, with their mean reward
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from common import rollout_records  # noqa: E402


def short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + "..."


def show(df, n: int, width: int) -> list[str]:
    step = int(df["step"].iloc[0])
    groups = df.groupby("prompt")["reward"]
    flat = int((groups.max() == groups.min()).sum())
    lines = [f"step {step} ({df['phase'].iloc[0]}): {len(df)} samples of {df['prompt'].nunique()} prompts; reward "
             f"mean {df['reward'].mean():.3f} [min {df['reward'].min():.3f}, max {df['reward'].max():.3f}]; "
             f"{flat} groups with equal rewards (no signal); {int((df['finish_reason'] == 'length').sum())} cut at "
             "max_new_tokens"]
    parts = [c for c in df.columns if c.startswith("reward/")]
    ordered = df.sort_values(["reward", "prompt", "sample"], ascending=[False, True, True])
    for title, rows in (("best", ordered.head(n)), ("worst", ordered.tail(n).iloc[::-1])):
        lines.append(f"-- {title} {len(rows)}")
        for _, row in rows.iterrows():
            comps = " ".join(f"{c[7:]} {_shown(row[c])}" for c in parts)
            adv = "-" if row["advantage"] is None else f"{row['advantage']:+.3f}"
            lines += [f"[prompt {row['prompt']} sample {row['sample']}] reward {row['reward']:.3f} ({comps}) "
                      f"advantage {adv} tokens {row['completion_tokens']} {row['finish_reason']}",
                      f"   prompt  ...{short(row['prompt_text'][-width:], width)}"]
            turns = row.get("turns") if "turns" in row else None
            lines += turn_lines(json.loads(turns), width) if isinstance(turns, str) else \
                [f"   answer  {short(row['completion'], width)}"]
    return lines


def _shown(value) -> str:
    """A reward's value or part: a number to 3 places, a text column (a function's log_extra) cut short."""
    if isinstance(value, str):
        return short(value, 40)
    return "-" if value is None or value != value else f"{value:.3f}"


def turn_lines(turns: list[dict], width: int) -> list[str]:
    """A multi-turn sample, its turns marked: what the policy wrote, and each tool call with its observation."""
    out = []
    for t in turns:
        if t["role"] == "policy":
            out.append(f"   turn {t['turn']} policy ({t['tokens']} tokens)  {short(t['text'], width)}")
        else:
            out.append(f"   turn {t['turn']} {t['tool']}({short(str(t['arg']), 60)}) -> {t['status']} "
                       f"({t['tokens']} tokens)  {short(t['text'], width)}")
    return out


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run folder (with rollouts/)")
    p.add_argument("--step", type=int, help="the step to show (default: the last recorded)")
    p.add_argument("-n", type=int, default=2, help="how many best and worst samples")
    p.add_argument("--width", type=int, default=160, help="characters of prompt and answer to show")
    p.add_argument("--steps", action="store_true", help="list the recorded steps")
    args = p.parse_args(argv)
    run = Path(args.run)
    if not run.is_dir():
        print(f"error: there is no run folder {run} (looked at {run.resolve()}); give the run's folder, "
              "train.output_dir/train.run_name (runs/<name> by default)", file=sys.stderr)
        return 2
    if not (run / rollout_records.DIR).is_dir():
        print(f"error: {run} has no rollout records ({rollout_records.DIR}/): no sampled step was recorded in it yet "
              "(SFT-only phases record none)", file=sys.stderr)
        return 2
    try:
        if args.steps:
            df = rollout_records.read(Path(args.run))
            for (step, phase), g in df.groupby(["step", "phase"]):
                print(f"step {step} ({phase}): {len(g)} samples, reward mean {g['reward'].mean():.3f}")
            return 0
        step = args.step
        if step is None:
            files = sorted((Path(args.run) / rollout_records.DIR).glob("step-*.parquet"))
            step = int(files[-1].stem.split("-")[1]) if files else 0
        df = rollout_records.read(Path(args.run), step)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(show(df, args.n, args.width)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
