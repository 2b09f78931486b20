"""The benchmark: one command, one run, docs/benchmarks.md.

    make bench                      (installs the `bench` extra: a pinned TRL)
    python bench/run.py [--steps 6] [--trl-steps 4] [--repeats 3] [--skip-trl] [--skip-scaling]

Workload (ours and the peer's): the default GRPO preset's step: 4 XQuAD-en prompts x K=4, <= 64 new tokens, T 0.8,
top-p 0.9, lr 1e-5, beta 0.04, clip 0.2, the embedded SmolLM2-135M-Instruct, one local Ray node. In order, each
alone on the machine (2 cores: nothing runs beside a measurement):
  1. the machine: CPU model, cores, the ISA flags that decide precision; matmul peak (fp32 and bf16) on the
     learner's GEMM shapes
  2. our job for --steps steps (the first dropped: vLLM compiles on first use): seconds per stage, samples/s, the
     learner's and reference's model FLOP/s against that peak, peak RSS of every actor; then the same job in the
     other precision (fp32 where auto took bf16, bf16 forced where it took fp32): the engine-vs-learner mismatch
     and the TIS weights in both
  2b. one learner update of the preset step and of bench/learner.py's large shape, token-budget micro-batches
     (learner.max_tokens_per_micro_batch=auto) against the fixed micro_batch_size 4 of before
  3. plain HF `generate` on the same prompts, same sampling: tokens/s, against our engine's
  4. weight sync: the object-store push against vLLM's in-place reload alone (bench/weight_sync.py)
  5. scaling: 2 rollout engines, then 2 reward actors
  6. the peer: TRL GRPOTrainer on the same workload (bench/trl_peer.py)
Every figure: median [min, max] over its repeats.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import head, notes, spread  # noqa: E402

STAGES = ["generate", "reward", "reference", "learn", "sync"]
WORKLOAD = ["rollout.max_new_tokens=64", "data.limit=400", "train.prompts_per_step=4", "rollout.group_size=4"]
# The targets, the one place the report states them: where auto takes fp32 (AVX2) and where it takes bf16
_EVERYWHERE = {"hf_generate": 2.5, "sync_share": 0.05, "rss_gib": 4.0}
TARGETS_AVX2 = {"ratio_trl": 5.0, "learn_peak": 0.60, "reference_peak": 0.60, **_EVERYWHERE}
TARGETS_BF16 = {"ratio_trl": 10.0, "learn_peak": 0.50, "reference_peak": 0.50, **_EVERYWHERE}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- 1. the machine ----------------------------------------------------------------------------------------------
def machine() -> dict:
    from common.precision import cpu_flags, decide, isa_summary

    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0.0) if Path("/proc/meminfo").exists() else 0.0
    versions = {}
    for mod in ("torch", "vllm", "ray", "transformers", "trl"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing peer is reported, not fatal
            versions[mod] = "not installed"
    auto = decide("auto", "cpu")  # this node's cached measurement (common/precision.py), or a new one
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa_summary(), "ram_gib": round(mem, 1),
            "auto_precision": auto.precision, "auto_why": auto.describe(),
            "flags": sorted(f for f in cpu_flags() if "avx" in f or "amx" in f),
            "versions": versions, "date": datetime.date.today().isoformat()}


def matmul_peak(repeats: int, threads: int) -> dict:
    """GFLOP/s of the learner's GEMM shapes (SmolLM2: hidden 576, MLP 1536, ~2048 tokens a micro-batch): forward
    x @ W, weight grad dY^T @ X, input grad dY @ W^T; per precision, the best shape's median is 'the peak'."""
    import torch

    torch.set_num_threads(threads)
    shapes = {"forward": (2048, 576, 1536), "weight grad": (1536, 2048, 576), "input grad": (2048, 1536, 576)}
    out = {}
    for prec, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rows = {}
        for name, (m, k, n) in shapes.items():
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            a @ b  # warm
            t0 = time.perf_counter()
            a @ b
            once = time.perf_counter() - t0
            inner = max(1, int(0.5 / max(once, 1e-4)))  # ~0.5 s a repeat
            vals = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(inner):
                    a @ b
                vals.append(2 * m * k * n * inner / (time.perf_counter() - t0) / 1e9)
            rows[name] = vals
        out[prec] = {"shapes": rows, "peak": max(statistics.median(v) for v in rows.values())}
    return out


# ---- 2. our job --------------------------------------------------------------------------------------------------
def run_ours(tag: str, steps: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / "jobs" / "grpo_mlqa.py"), "--config", str(ROOT / "jobs/configs/smoke.yaml"),
           "--local", f"train.output_dir={out}", f"train.run_name={tag}", f"train.phases.0.steps={steps}",
           "train.eval_at_start=false", f"train.eval_every={steps}", f"train.save_every={steps}", *WORKLOAD, *extra]
    log(f"ours ({tag}): {steps} GRPO steps ...")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    recs = [json.loads(x) for x in (out / tag / "metrics.jsonl").read_text().splitlines()]
    steps_ = [r for r in recs if r.get("kind") == "step"]
    info = next((r.get("precision") for r in recs if r.get("precision")), {})
    summary = json.loads((out / tag / "summary.json").read_text())
    log(f"ours ({tag}): done in {time.perf_counter() - t0:.0f} s")
    return {"steps": steps_[1:] or steps_, "precision": info, "peak_rss_gib": summary.get("peak_rss_gib", {}),
            "wall_s": time.perf_counter() - t0}


def body_params(policy_path: str) -> dict:
    """Parameter counts for model FLOPs: the transformer body's matmul weights and the LM head's."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(policy_path)
    h, i, L, V = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    kv = h * c.num_key_value_heads // c.num_attention_heads
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i  # q, o, k, v, gate/up/down
    return {"body": per_layer * L, "head": h * V}


def flops(steps: list[dict], params: dict, passes: float) -> list[float]:
    """Model FLOPs a step: 2 x weights x positions per forward; `passes` = 1 (reference) or 3 (forward+backward)
    times the updates. Attention scores and the optimizer are not counted: a lower bound on the work."""
    out = []
    for r in steps:
        fwd = 2 * (params["body"] * r["learner/tokens_forward"] + params["head"] * r["learner/head_positions"])
        out.append(passes * fwd)
    return out


# ---- 3. HF generate on the same prompts ---------------------------------------------------------------------------
def hf_generate(repeats: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from common import console
    from trainer.run import load_job, load_task

    console.quiet()
    cfg = load_job(str(ROOT / "jobs/configs/smoke.yaml"), WORKLOAD)
    policy_path, task = load_task(cfg)
    prompts = task.train_batch(0, cfg.train.prompts_per_step).prompt_ids
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32).eval()
    tok = task.tokenizer
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    r = cfg.rollout
    rates = []
    for rep in range(repeats + 1):
        torch.manual_seed(rep)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=r.temperature,
                                 top_p=r.top_p, max_new_tokens=r.max_new_tokens, num_return_sequences=r.group_size,
                                 pad_token_id=tok.pad_token_id)
        seconds = time.perf_counter() - t0
        new = out[:, width:].tolist()
        n = sum(next((i + 1 for i, t in enumerate(row) if t == tok.eos_token_id), len(row)) for row in new)
        if rep:  # the first call is a warm-up
            rates.append(n / seconds)
    return {"tokens_per_s": rates}


def learn_profile(threads: int, prompt_len: int, completion_len: int) -> dict:
    """Where one learner update's time goes (torch.profiler, self CPU time by op), on a batch shaped like the run's
    mean step: 4 groups of 4 completions."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from common.models import resolve_model
    from common.types import TrainBatch
    from learner.policy import AlgoParams, Learner

    learner = Learner(resolve_model("embedded:smollm2-135m-instruct"), lr=1e-5, total_steps=10, threads=threads)
    g = torch.Generator().manual_seed(0)
    P, C = [], []
    for _ in range(4):
        prompt = torch.randint(100, 40000, (prompt_len,), generator=g).tolist()
        for k in range(4):
            P.append(prompt)
            C.append(torch.randint(100, 40000, (max(1, completion_len + 8 * (k - 2)),), generator=g).tolist())
    old = learner.logprobs(P, C)
    batch = TrainBatch(P, C, old, old, torch.randn(16, generator=g).tolist())
    learner.train_step(batch, AlgoParams())  # warm
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        learner.train_step(batch, AlgoParams())
    wall = time.perf_counter() - t0
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) / 1e6
    return {"wall_s": wall, "total_s": total,
            "top": [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in ops[:8]]}


def learner_bench(threads: int, shape: str, fixed: bool) -> dict:
    """One line of bench/learner.py: the preset step (3 repeats after a warm-up) or the large shape (one update, ~10 min
    on 2 cores), with token-budget micro-batches (auto) or the fixed micro_batch_size 4 of before."""
    args = ["--threads", str(threads)]
    args += ["--only-large", "--repeats", "1", "--no-warmup"] if shape == "large" else ["--repeats", "3"]
    args += ["--max-tokens", "none", "--micro-batch-size", "4"] if fixed else ["--max-tokens", "auto"]
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "learner.py"), *args], capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"bench/learner.py failed: {out.stderr[-2000:]}")
    return json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])


def result_of(cmd: list[str], what: str, tail: int = 2000) -> dict:
    """Run a measurement in a fresh process (its own threads and memory) and read its `RESULT {json}` line."""
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{what} failed: {out.stderr[-tail:]}")
    return json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[7:])


def in_subprocess(fn: str, *args) -> dict:
    """One of this module's measurements in a fresh process."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.run import {fn}; "
            f"print('RESULT ' + json.dumps({fn}(*{list(args)!r})))")
    return result_of([sys.executable, "-c", code], fn)


def weight_sync(repeats: int) -> dict:
    return result_of([sys.executable, str(ROOT / "bench" / "weight_sync.py"), "--path", "object_store",
                      "--repeats", str(repeats)], "weight sync bench")


def trl_peer(steps: int) -> dict | None:
    try:
        import trl  # noqa: F401
    except ImportError:
        log("TRL is not installed (pip install -e '.[bench]'): the peer row is skipped")
        return None
    log(f"peer: TRL GRPOTrainer, {steps} steps ...")
    return result_of([sys.executable, str(ROOT / "bench" / "trl_peer.py"), "--steps", str(steps), *WORKLOAD],
                     "TRL peer", 3000)


# ---- the report ---------------------------------------------------------------------------------------------------
def col(steps: list[dict], key: str) -> list[float]:
    return [r[key] for r in steps if key in r]


def report(m: dict, cmd: str, notes_of: Path | None = None) -> str:
    """docs/benchmarks.md from the measurements. `notes_of`, a --raw file rendered again, finds what a person wrote
    about that measurement beside it (<stem>-notes.md), included verbatim at the end; a new measurement has none."""
    mach, ours, peak = m["machine"], m["ours"], m["matmul"]
    steps = ours["steps"]
    prec = ours["precision"] or {}
    learner_prec = prec.get("learner", mach["auto_precision"])
    peak_g = peak[learner_prec]["peak"]
    bf16_units = mach["auto_precision"] == "bf16"
    targets = TARGETS_BF16 if bf16_units else TARGETS_AVX2
    step_s = col(steps, "timing/step")
    sps = col(steps, "perf/samples_per_s")
    learn_gf = [f / s / 1e9 for f, s in zip(flops(steps, m["params"], 3.0 * m["inner_steps"]), col(steps, "timing/learn"))]
    ref_gf = [f / s / 1e9 for f, s in zip(flops(steps, m["params"], 1.0), col(steps, "timing/reference"))]
    gen_ours = col(steps, "perf/tokens_per_s_generate")
    gen_hf = m["hf_generate"]["tokens_per_s"]
    sync_frac = [a / b for a, b in zip(col(steps, "timing/sync"), step_s)]
    L = ["# Benchmarks", "",
         f"Generated by `{cmd}` on {mach['date']}, one run, each measurement alone on the machine.", "",
         "## Machine", "",
         f"- CPU: {mach['cpu']}, {mach['cores']} cores, {mach['ram_gib']} GiB RAM, no GPU",
         f"- ISA: {mach['isa']} (flags: {', '.join(mach['flags']) or '-'}); `precision: auto` resolves to "
         f"**{mach['auto_precision']}** here: {mach.get('auto_why', '')}",
         "- " + ", ".join(f"{k} {v}" for k, v in mach["versions"].items()),
         f"- matmul peak, {m['threads']} threads (GFLOP/s, median [min, max] of {m['repeats']} repeats): " + "; ".join(
             f"{p}: " + ", ".join(f"{n} {spread(v, '{:.0f}')}" for n, v in peak[p]["shapes"].items())
             for p in ("fp32", "bf16")), "",
         "## Workload", "",
         "The default GRPO preset's step: 4 XQuAD-en prompts x K=4 = 16 samples, <= 64 new tokens, T 0.8, top-p 0.9, "
         "lr 1e-5, beta 0.04 (k3, reference actor), clip 0.2, the embedded SmolLM2-135M-Instruct; one local Ray node "
         f"(1 vLLM engine, 1 reward actor, learner, reference). Ours: {len(steps)} steps after a dropped first step; "
         f"precision learner {learner_prec}, engines {'/'.join(prec.get('engines', ['?']))}.", ""]
    trl = m.get("trl")
    L += ["## Against the peer", ""]
    if trl:
        warm = trl["step_s"][1:]
        trl_sps = [trl["samples_per_step"] / s for s in warm]
        ratio = statistics.median(sps) / statistics.median(trl_sps)
        ratios = sorted(a / b for a in sps for b in trl_sps)
        L += [*head("system", "s / step", "samples / s", "mean completion tokens", "steps"),
              f"| ours (Ray + vLLM) | {spread(step_s)} | {spread(sps)} | {spread(col(steps, 'rollout/len_mean'), '{:.1f}')} "
              f"| {len(steps)} |",
              f"| TRL {trl['trl']} GRPOTrainer (CPU, transformers generate) | {spread(warm)} | {spread(trl_sps, '{:.3f}')} "
              f"| {spread([x for x in trl['completion_len'][1:] if x], '{:.1f}')} | {len(warm)} (first dropped) |", "",
              f"**ratio vs TRL GRPOTrainer: {ratio:.1f}x** (median samples/s over median samples/s; over all pairs of "
              f"steps {ratios[0]:.1f}x to {ratios[-1]:.1f}x). Target here: >= {targets['ratio_trl']:.0f}x.", ""]
        m["ratio_trl"] = ratio
    else:
        L += ["TRL was not installed: `pip install -e '.[bench]'` (or `make bench`) adds the pinned peer.", ""]
    L += ["## Stages against their floors", "",
          *head("stage", "seconds / step", "share of the step", "measured against", "ratio")]
    for s in STAGES:
        xs = col(steps, f"timing/{s}")
        share = statistics.median(xs) / statistics.median(step_s)
        floor, ratio = "", ""
        if s == "learn":
            floor = f"{learner_prec} matmul peak {peak_g:.0f} GFLOP/s: {spread(learn_gf, '{:.0f}')} GFLOP/s achieved"
            ratio = f"{statistics.median(learn_gf) / peak_g:.0%} of peak (target {targets['learn_peak']:.0%})"
        elif s == "reference":
            rp = peak[prec.get("reference", learner_prec)]["peak"]
            floor = f"matmul peak {rp:.0f} GFLOP/s: {spread(ref_gf, '{:.0f}')} GFLOP/s achieved"
            ratio = f"{statistics.median(ref_gf) / rp:.0%} of peak (target {targets['reference_peak']:.0%})"
        elif s == "generate":
            floor = (f"HF generate, same prompts and sampling: {spread(gen_hf, '{:.0f}')} tok/s; ours "
                     f"{spread(gen_ours, '{:.0f}')} tok/s")
            ratio = (f"{statistics.median(gen_ours) / statistics.median(gen_hf):.2f}x HF generate "
                     f"(target {targets['hf_generate']}x)")
        elif s == "sync":
            ws = m["sync"]
            floor = (f"push {spread(ws['push'], '{:.3f}')} s vs vLLM reload alone {spread(ws['reload_alone'], '{:.3f}')} s "
                     f"({ws['bytes'] / 2**20:.0f} MiB); probe check {spread(ws['probe'], '{:.3f}')} s")
            ratio = (f"{statistics.median(ws['push']) / statistics.median(ws['reload_alone']):.2f}x reload alone; "
                     f"{statistics.median(sync_frac):.1%} of a step (target <= {targets['sync_share']:.0%})")
        elif s == "reward":
            floor = "rule reward (F1/EM) on one actor"
        L.append(f"| {s} | {spread(xs)} | {share:.0%} | {floor} | {ratio} |")
    L += [f"| step | {spread(step_s)} | 100% | | |", "",
          "Model FLOPs count the weight matmuls of the positions each pass runs (a GRPO group's shared prompt once, "
          "each completion's tokens, the LM head only at completion positions); attention scores, softmax and the "
          "optimizer are left out, so achieved FLOP/s are a lower bound. Learn = 3 passes (forward + backward) per "
          "update.", ""]
    prof = m.get("learn_profile")
    if prof:
        L += [f"Where a learner update's time goes (torch.profiler, one update of 4 groups x 4 shaped like the run's, "
              f"{prof['wall_s']:.1f} s wall; self CPU time by op):", "",
              *head("op", "seconds", "share", "calls")]
        for name, sec, calls in prof["top"]:
            L.append(f"| `{name[:60]}` | {sec:.2f} | {sec / prof['total_s']:.0%} | {calls} |")
        L.append("")
    L += learner_section(m) + mismatch_section(m)
    L += ["## Memory", "", "Peak RSS of every actor (GiB, VmHWM read by each process at the end of the run):", "",
          *head("actor", "GiB")]
    for name, vals in ours["peak_rss_gib"].items():
        L.append(f"| {name} | {', '.join(f'{v:.2f}' for v in vals if v is not None)} |")
    L += ["", f"Target: no actor above {targets['rss_gib']:.0f} GiB.", ""]
    if m.get("scaling"):
        L += ["## Scaling on this machine", "",
              *head("configuration", "s / step", "samples / s", "generate s", "reward s", "steps")]
        for name, st in {"1 engine, 1 reward actor": steps, **{k: v["steps"] for k, v in m["scaling"].items()}}.items():
            if name.startswith("overlap"):
                st = [{**r, "timing/generate": r["timing/generate"] + r.get("timing/generate_wait", 0.0)} for r in st]
            L.append(f"| {name} | {spread(col(st, 'timing/step'))} | {spread(col(st, 'perf/samples_per_s'))} | "
                     f"{spread(col(st, 'timing/generate'))} | {spread(col(st, 'timing/reward'), '{:.3f}')} | {len(st)} |")
        L += ["", scaling_reading(statistics.median(step_s), {name: statistics.median(col(res["steps"], "timing/step"))
                                                              for name, res in m["scaling"].items()},
                                  statistics.median(col(steps, "timing/reward")), mach["cores"]), "",
              "Overlap generates the next batch while the learner trains on this one (one update off-policy; its "
              "generate column is only the wait left after learning, `timing/generate_wait` included). Where engines "
              "and learner sit on different devices, the step becomes max(generate, score + reference + learn) + sync "
              "instead of their sum.", ""]
    L += learner_workers_section()
    L += targets_section(m, targets, bf16_units, learn_gf, ref_gf, peak_g, gen_ours, gen_hf, sync_frac)
    return "\n".join(L + (notes(notes_of.parent, notes_of.stem) if notes_of else []))


def learner_workers_section() -> list[str]:
    """learner.workers 1 vs N, as bench/learner_workers.py last measured it (docs/learner_workers.md): its table and
    equivalence line, with the command; nothing when it has not run."""
    doc = ROOT / "docs" / "learner_workers.md"
    if not doc.is_file():
        return []
    lines = doc.read_text().splitlines()
    pick = lambda prefix: [x for x in lines if x.startswith(prefix)]  # noqa: E731
    return ["## Learner workers (learner.workers, learner.sharding)", "", *pick("Generated by"), "", *pick("|"), "",
            *pick("**Reading.**"),
            "", "Details: [learner_workers.md](learner_workers.md).", ""]


def scaling_reading(base: float, steps: dict[str, float], reward_s: float, cores: int) -> str:
    """Each configuration's median step against the median step of 1 engine and 1 reward actor (base), and the
    share of the step a second reward actor could split at most (the reward stage's)."""
    def against(s: float) -> str:
        return f"{s:.2f} s ({s / base:.2f}x, " + ("faster)" if s < base else "slower)" if s > base else "the same)")

    return (f"On {cores} cores, each configuration's median step against the {base:.2f} s of 1 engine and 1 reward "
            "actor: " + "; ".join(f"{name} {against(s)}" for name, s in steps.items())
            + f". The reward stage, all that a second reward actor can split, is {reward_s:.3f} s "
            f"({reward_s / base:.2%} of the step).")


LEARNER_ROWS = [("preset", True), ("preset", False), ("large", True), ("large", False)]


def learner_section(m: dict) -> list[str]:
    """One learner update of the preset step and of the large shape: token-budget micro-batches against today's
    fixed size (bench/learner.py, no Ray or vLLM)."""
    lb = m.get("learner_bench")
    if not lb:
        return []
    L = ["## Learner micro-batches: token budget against a fixed size", "",
         "One learner update and one reference pass, `python bench/learner.py` (random token ids; preset: 4 prompts x "
         "4, 250-token prompts, 32-64-token completions, 3 repeats after a warm-up; large: 64 prompts x 8, 256-token "
         "prompts, 192-256-token completions, one update). Fixed: `learner.micro_batch_size=4` with no budget "
         "(today's default before this change); budget: `learner.max_tokens_per_micro_batch=auto` (rows sorted by "
         "length, whole groups while they fit, the LM head in chunks).", "",
         *head("shape", "micro-batches", "seconds per update", "reference pass s", "model TFLOP/s (update)",
               "share of matmul peak", "peak RSS GiB")]
    for shape, fixed in LEARNER_ROWS:
        r = lb.get(f"{shape}-{'fixed' if fixed else 'budget'}")
        if not r:
            continue
        how = "micro_batch_size 4" if fixed else f"budget {r['max_tokens_per_micro_batch']} tokens"
        L.append(f"| {shape} ({r['sequences']} sequences, {r['precision']}), {how} | {r['micro_batches']} | "
                 f"{spread(r['update_s'])} | {spread(r['reference_s'])} | {r['update_tflops']:.3f} | "
                 f"{r['update_peak_share']:.0%} | {r['peak_memory_gib']:.2f} |")
    return L + [""]


def mismatch_section(m: dict) -> list[str]:
    """Engine-vs-learner mismatch and the TIS weights in the run's precision and in the other one."""
    runs = {m["ours"]["precision"].get("learner", "?"): m["ours"]["steps"]}
    other = m.get("other_precision")
    if other:
        runs[other["precision"].get("learner", "?")] = other["steps"]
    L = ["## Engine-vs-learner mismatch by precision", "",
         "Per step at the first update, over the sampled tokens (learner/mismatch_*): mean |dlogp|, a k3 estimate of "
         "KL(engine || learner), the share of tokens with |dlogp| > 0.1; the sync check's mean/largest probe gap "
         "(sync/gap); the TIS weights min(pi_old / pi_engine, 2) where the ratio uses the learner's own old "
         "logprobs (bf16). Median [min, max] over the steps.", "",
         *head("learner / engines", "s / step", "learn s", "generate s", "mean abs dlogp", "KL(engine, learner)",
               "share > 0.1", "largest dlogp", "probe gap", "TIS mean", "TIS max", "TIS clipped")]
    for prec, st in runs.items():
        f = lambda key, fmt="{:.1e}": spread(col(st, key), fmt) if col(st, key) else "-"  # noqa: E731
        L.append(f"| {prec} | {f('timing/step', '{:.1f}')} | {f('timing/learn', '{:.1f}')} | "
                 f"{f('timing/generate', '{:.1f}')} | {f('learner/mismatch_abs_mean')} | {f('learner/mismatch_kl')} | "
                 f"{f('learner/mismatch_frac_big', '{:.3f}')} | {f('learner/logprob_diff_max')} | {f('sync/gap')} | "
                 f"{f('learner/tis_mean', '{:.3f}')} | {f('learner/tis_max', '{:.2f}')} | "
                 f"{f('learner/tis_clipped_frac', '{:.4f}')} |")
    return L + [""]


def packing_note(m: dict) -> str:
    """What the token budget did to the preset step's update in this run (the learner table), in one sentence."""
    lb = m.get("learner_bench") or {}
    fixed, budget = lb.get("preset-fixed"), lb.get("preset-budget")
    if not (fixed and budget):
        return "The token-budget micro-batches were not measured in this run."
    r = statistics.median(budget["update_s"]) / statistics.median(fixed["update_s"])
    return (f"With the token budget an update of the preset step takes {r:.2f}x the time of one group per forward "
            f"({budget['micro_batches']} vs {fixed['micro_batches']} micro-batches; the learner table above).")


def targets_section(m, targets, bf16_units, learn_gf, ref_gf, peak_g, gen_ours, gen_hf, sync_frac) -> list[str]:
    """Every target of the issue against this run, and for a missed one where the time or memory goes."""
    med = statistics.median
    steps = m["ours"]["steps"]
    step_med = med(col(steps, "timing/step"))
    share = lambda stage: med(col(steps, f"timing/{stage}")) / step_med  # noqa: E731
    rss = {name: max((v for v in vals if v is not None), default=0.0) for name, vals in m["ours"]["peak_rss_gib"].items()}
    top = max(rss, key=rss.get, default="-")
    ref_peak = m["matmul"]["fp32" if not bf16_units else "bf16"]["peak"]
    gen = med(gen_ours) / med(gen_hf)
    rows = [("samples/s vs TRL GRPOTrainer", f">= {targets['ratio_trl']:.0f}x",
             f"{m['ratio_trl']:.1f}x" if "ratio_trl" in m else "not measured",
             m.get("ratio_trl", 0) >= targets["ratio_trl"],
             f"The step is the sum of its stages on {m['machine']['cores']} cores: learn {share('learn'):.0%}, "
             f"generation {share('generate'):.0%}, reference {share('reference'):.0%}. "
             + peer_reading(m.get("trl"), m.get("ratio_trl", 0.0), share("generate"), gen, med(gen_hf))),
            ("learner model FLOP/s vs matmul peak", f">= {targets['learn_peak']:.0%}", f"{med(learn_gf) / peak_g:.0%}",
             med(learn_gf) / peak_g >= targets["learn_peak"], profile_reading(m.get("learn_profile")) + packing_note(m)),
            ("reference model FLOP/s vs matmul peak", f">= {targets['reference_peak']:.0%}", f"{med(ref_gf) / ref_peak:.0%}",
             med(ref_gf) / ref_peak >= targets["reference_peak"],
             "Forward only, one group per pass: the same small-M GEMMs as the learner, plus attention and the "
             "full-vocabulary log-softmax at completion positions."),
            ("generation tokens/s vs HF generate", f">= {targets['hf_generate']}x", f"{gen:.2f}x",
             gen >= targets["hf_generate"], ""),
            ("weight sync share of a step", f"<= {targets['sync_share']:.0%}", f"{med(sync_frac):.1%}",
             med(sync_frac) <= targets["sync_share"], ""),
            ("largest actor peak RSS", f"<= {targets['rss_gib']:.0f} GiB", f"{rss.get(top, 0.0):.2f} GiB",
             rss.get(top, 0.0) <= targets["rss_gib"], "Above the target: " + ", ".join(
                 f"{name} {gib:.2f} GiB" for name, gib in sorted(rss.items(), key=lambda x: -x[1])
                 if gib > targets["rss_gib"]) + " (the Memory table).")]
    L = ["## Targets", "", "| target | wanted | this run | |", "|---|---|---|---|"]
    for name, want, got, ok, _ in rows:
        L.append(f"| {name} | {want} | {got} | {'met' if ok else '**missed**'} |")
    L += [""]
    for name, _, got, ok, why in rows:
        if not ok and why:
            L += [f"- **{name}** ({got}): {why}"]
    return L + [""]


def peer_reading(trl: dict | None, ratio: float, gen_share: float, gen_ratio: float, hf_tokens_s: float) -> str:
    """Where the ratio against TRL comes from: generation on both sides and the ratio's range over pairs of steps.
    TRL's generation time is estimated from its completion tokens at the HF generate rate measured here."""
    text = (f"vLLM generates {gen_ratio:.1f}x as fast as transformers' generate here; with free generation on our "
            f"side the ratio would be {ratio / (1 - gen_share):.1f}x.")
    lens = [x for x in trl["completion_len"][1:] if x] if trl else []
    if lens:
        tokens = trl["samples_per_step"] * statistics.median(lens)
        est, step = tokens / hf_tokens_s, statistics.median(trl["step_s"][1:])
        text += (f" At the {hf_tokens_s:.0f} tok/s of HF generate measured here, TRL's {tokens:.0f} completion tokens a "
                 f"step take about {est:.0f} s of its {step:.0f} s step ({est / step:.0%}).")
    return text


def profile_reading(prof: dict | None) -> str:
    """The share of a profiled learner update's self CPU time in matrix multiplies."""
    if not prof:
        return ""
    mm = sum(sec for name, sec, _ in prof["top"] if name.endswith("mm"))
    return (f"Matrix multiplies (aten::*mm) take {mm / prof['total_s']:.0%} of the profiled update's self CPU time; "
            "the other ops are in the profile above. ")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6, help="our GRPO steps (the first is dropped)")
    p.add_argument("--scaling-steps", type=int, default=4)
    p.add_argument("--trl-steps", type=int, default=4, help="TRL steps (the first is dropped)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--skip-large", action="store_true", help="no learner update of the large shape (~20 min here)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--raw", default=None, help="also write every measurement as JSON here")
    p.add_argument("--from-raw", default=None, help="no measuring: render the report from a --raw file of a run")
    args = p.parse_args(argv)
    if args.from_raw:
        m = json.loads(Path(args.from_raw).read_text())
        text = report(m, m.get("cmd", "python bench/run.py"), Path(args.from_raw))
        Path(args.out).write_text(text + "\n")
        print(text)
        return 0
    cmd = "python bench/run.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    from common.models import resolve_model

    m: dict = {"threads": args.threads, "repeats": args.repeats, "inner_steps": 1, "cmd": cmd}
    m["machine"] = machine()
    log(f"machine: {m['machine']['cpu']}, {m['machine']['isa']}; precision auto -> {m['machine']['auto_precision']}")
    log("matmul peak ...")
    m["matmul"] = in_subprocess("matmul_peak", args.repeats, args.threads)
    m["params"] = body_params(resolve_model("embedded:smollm2-135m-instruct"))
    with tempfile.TemporaryDirectory(prefix="raygrpo-bench-") as tmp:
        m["ours"] = run_ours("ours", args.steps, Path(tmp), [])
        log("HF generate on the same prompts ...")
        m["hf_generate"] = in_subprocess("hf_generate", args.repeats, args.threads)
        log("weight sync ...")
        m["sync"] = weight_sync(args.repeats)
        log("profile of one learner update ...")
        st = m["ours"]["steps"]
        tokens, length = statistics.median(col(st, "learner/tokens_forward")), statistics.median(col(st, "rollout/len_mean"))
        # a group runs its prompt once and 4 completions padded to the group's longest (~mean + 8)
        prompt_len = max(16, int(tokens / 4 - 4 * (length + 8)))
        m["learn_profile"] = in_subprocess("learn_profile", args.threads, prompt_len, int(length))
        other = "fp32" if m["ours"]["precision"].get("learner") == "bf16" else "bf16"
        m["other_precision"] = run_ours(f"ours-{other}", args.scaling_steps, Path(tmp),
                                        [f"learner.precision={other}", f"rollout.dtype={other}"])
        m["learner_bench"] = {}
        for shape, fixed in LEARNER_ROWS:
            if shape == "large" and args.skip_large:
                continue
            log(f"learner update, {shape} shape, {'fixed micro_batch_size 4' if fixed else 'token budget'} ...")
            m["learner_bench"][f"{shape}-{'fixed' if fixed else 'budget'}"] = learner_bench(args.threads, shape, fixed)
        if not args.skip_scaling:
            m["scaling"] = {
                "2 engines, 1 reward actor": run_ours("engines2", args.scaling_steps, Path(tmp),
                                                      ["cluster.num_rollout_actors=2"]),
                "1 engine, 2 reward actors": run_ours("rewards2", args.scaling_steps, Path(tmp),
                                                      ["cluster.num_reward_actors=2"]),
                "overlap (train.overlap=true)": run_ours("overlap", args.scaling_steps, Path(tmp),
                                                         ["train.overlap=true"])}
    if not args.skip_trl:
        m["trl"] = trl_peer(args.trl_steps)
    text = report(m, cmd)
    Path(args.out).write_text(text + "\n")
    if args.raw:
        Path(args.raw).write_text(json.dumps(m, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
