"""A learning-rate sweep whose runs share one fleet (docs/cluster.md, "A fleet"): the engines, learner, reference and
reward actors start once and each later run resets them to its own start. Each run gives what it gives alone.

    python docs/examples/sweep_on_one_fleet.py --config my_job.yaml --lrs 1e-5 3e-5 1e-4 [overrides ...]
"""
import argparse
import sys

from cluster.fleet import FleetPool
from trainer.run import load_job, load_task, run


def sweep(config: str, lrs: list[float], overrides: list[str]) -> list[dict]:
    """One run per learning rate, all on the pool's fleet; their summaries."""
    summaries = []
    with FleetPool(keep=1) as pool:  # the fleets it started end with the block
        for lr in lrs:
            cfg = load_job(config, [*overrides, f"learner.lr={lr}", f"train.run_name=lr-{lr:g}"])
            summaries.append(run(cfg, loaded=load_task(cfg), fleet=pool))
    return summaries


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--lrs", type=float, nargs="+", required=True)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    for s in sweep(a.config, a.lrs, a.overrides):
        metric = s["primary_metric"].removeprefix("eval/")
        print(f"{s['run_dir']}: best {metric} {s['best_' + metric]} at step {s['best_step']}")
    sys.exit(0)
