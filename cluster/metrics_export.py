"""Training metrics on the Ray cluster's Prometheus endpoint (ray.util.metrics), where the dashboard's Grafana and
any Prometheus that scrapes the cluster see them while the job runs.

Gauges, tagged with the run name and phase (Ray prefixes every name with `ray_`):
    raygrpo_step, raygrpo_reward_mean, raygrpo_kl, raygrpo_clip_frac, raygrpo_logprob_gap_max,
    raygrpo_mismatch_abs_mean, raygrpo_mismatch_kl, raygrpo_sync_probe_gap,
    raygrpo_completion_tokens_mean, raygrpo_step_seconds, raygrpo_generate_tokens_per_s,
    raygrpo_sft_loss, raygrpo_eval (tagged with the metric), raygrpo_actor_restarts
"""
from __future__ import annotations

# record key -> gauge name
STEP_GAUGES = {"step": "raygrpo_step", "reward/mean": "raygrpo_reward_mean", "learner/kl": "raygrpo_kl",
               "learner/clip_frac": "raygrpo_clip_frac", "learner/logprob_diff_max": "raygrpo_logprob_gap_max",
               "learner/mismatch_abs_mean": "raygrpo_mismatch_abs_mean", "learner/mismatch_kl": "raygrpo_mismatch_kl",
               "sync/gap": "raygrpo_sync_probe_gap",
               "rollout/len_mean": "raygrpo_completion_tokens_mean", "timing/step": "raygrpo_step_seconds",
               "perf/tokens_per_s_generate": "raygrpo_generate_tokens_per_s", "sft/loss": "raygrpo_sft_loss",
               "cluster/actor_restarts": "raygrpo_actor_restarts"}


class PrometheusSink:
    """A MetricsLog sink: step and eval records -> gauges on this node's Ray metrics agent."""
    __name__ = "prometheus"

    def __init__(self, run: str):
        from ray.util.metrics import Gauge

        self.run = run
        self.gauges = {key: Gauge(name, description=f"{key} of the latest training step",
                                  tag_keys=("run", "phase")) for key, name in STEP_GAUGES.items()}
        self.eval = Gauge("raygrpo_eval", description="the latest held-out eval, by metric",
                          tag_keys=("run", "phase", "metric"))

    def __call__(self, record: dict) -> None:
        tags = {"run": self.run, "phase": str(record.get("phase") or "")}
        if record.get("kind") == "step":
            for key, gauge in self.gauges.items():
                value = record.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    gauge.set(float(value), tags=tags)
        elif record.get("kind") == "eval":
            for key, value in record.items():
                if key.startswith("eval/") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.eval.set(float(value), tags={**tags, "metric": key[5:]})


def endpoint() -> str | None:
    """This node's Prometheus endpoint, when Ray runs here."""
    try:
        import ray

        node = ray._private.worker.global_worker.node
        return f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    except Exception:  # noqa: BLE001 -- informational only
        return None
