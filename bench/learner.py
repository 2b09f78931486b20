"""One learner update and one reference pass, timed on any device: no Ray, no vLLM.

    python bench/learner.py [--device cpu|cuda] [--large] [--random-init MODEL_DIR] [--max-tokens N|auto|none]
                            [--micro-batch-size N] [--precision auto|fp32|bf16] [--repeats 3]

Shapes (random token ids; the learner cannot tell them from real text):
  preset  the default GRPO step: 4 prompts x K=4 samples, 250-token prompts, completions of 32-64 tokens
  large   (--large) 64 prompts x K=8 samples, 256-token prompts, completions of 192-256 tokens (<= 512 a sequence)
Per shape one JSON line: seconds of a learner update and of a reference pass (median [min, max] over --repeats,
after one warm-up), tokens/s, model TFLOP/s (2 x weights x positions per forward, 3 forwards per update; attention
scores and the optimizer not counted: a lower bound) and its share of the device's matmul peak measured here on the
model's GEMM shapes in the precision used, peak memory (CPU: the process's peak RSS; CUDA: peak allocated), and the
micro-batches the update ran. On this project's 2-core CPUs an update of the large shape takes ~10 minutes:
`--only-large --repeats 1 --no-warmup`.

--random-init MODEL_DIR: that folder's config and tokenizer with random weights (a GPU box without the weights can
run it; SmolLM2-135M-Instruct's config is enough). Needs only torch, transformers, pydantic, pyyaml and this repo.

--workers N [--sharding replicate|fsdp]: N learner processes on this machine (torch.distributed: gloo on the CPU,
NCCL with one GPU each on a GPU box), each with its share of the batch's groups, as learner.workers runs them. Per
shape one JSON line: seconds per update (the slowest worker's, per repeat), and per worker the bytes it keeps of
parameters, gradients and optimizer state (its shards under fsdp) and its peak memory. No reference pass there.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {  # prompts, samples per prompt, prompt tokens, (shortest, longest) completion
    "preset": (4, 4, 250, (32, 64)),
    "large": (64, 8, 256, (192, 256)),
}


def model_folder(model: str | None, random_init: str | None, out: Path) -> str:
    """The model to train: a folder/hub id/embedded spec, or `random_init`'s config and tokenizer with random weights."""
    if random_init is None:
        from common.models import resolve_model

        return resolve_model(model or "embedded:smollm2-135m-instruct")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(random_init)).save_pretrained(out)
    AutoTokenizer.from_pretrained(random_init).save_pretrained(out)
    return str(out)


def weight_counts(config) -> dict[str, int]:
    """Matmul weights of the transformer body and of the LM head (model FLOPs = 2 x weights x positions)."""
    h, i, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = h * config.num_key_value_heads // config.num_attention_heads
    return {"body": L * (2 * h * h + 2 * h * kv + 3 * h * i), "head": h * config.vocab_size}


def make_batch(shape: str, vocab: int, seed: int = 0):
    import torch

    from common.types import TrainBatch

    prompts, k, plen, (lo, hi) = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    first = min(100, vocab // 4)  # past the special tokens
    P, C = [], []
    for _ in range(prompts):
        prompt = torch.randint(first, vocab - 1, (plen,), generator=g).tolist()
        for _ in range(k):
            P.append(prompt)
            C.append(torch.randint(first, vocab - 1, (int(torch.randint(lo, hi + 1, (1,), generator=g)),),
                                   generator=g).tolist())
    return TrainBatch(P, C, old_logprobs=[], ref_logprobs=[], advantages=torch.randn(len(C), generator=g).tolist())


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        try:  # Linux: "5" resets the process's peak RSS (VmHWM) to its current RSS
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_gib(device: str) -> float | None:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    from cluster.groups import process_peak_rss_gib

    return process_peak_rss_gib("self")


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def planned_gib(learner, device: str, with_reference: bool = False) -> float:
    """The memory plan's figure (common/memory.py) for what `peak_gib` measures: on a GPU the allocated part of the
    learner (and of a reference in the same process); on a CPU the process's resident peak."""
    from common.memory import ModelShape, training_worker

    shape = ModelShape.of(learner.held.path)
    on_gpu, bf16 = device == "cuda", learner.precision == "bf16"
    workers = learner.dp.world_size if learner.dp is not None else 1
    budget = learner.max_tokens or 16384
    kw = dict(workers=workers, sharded=learner.held.sharded, budget=budget, bf16=bf16, on_gpu=on_gpu)
    actors = [training_worker("learner", shape, optimizer=learner.optimizer, offload=learner.held.offload, **kw)]
    if with_reference:
        actors.append(training_worker("reference", shape, frozen=True, **kw))
    if on_gpu:
        return sum(a.device_gib() for a in actors)
    return actors[0].peak_gib + sum(a.peak_gib - a.parts["process"] for a in actors[1:])


def measure(learner, reference, shape: str, repeats: int, device: str, weights: dict, peak_gflops: float,
            warmup: bool = True) -> dict:
    import dataclasses

    from learner.policy import AlgoParams

    batch = make_batch(shape, learner.model.config.vocab_size)
    old = reference.logprobs(batch.prompt_ids, batch.completion_ids)
    batch = dataclasses.replace(batch, old_logprobs=old, ref_logprobs=old)
    algo = AlgoParams()
    reset_peak(device)
    if warmup:
        learner.train_step(batch, algo)  # allocator, kernel selection
    upd, ref, m = [], [], {}
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        m = learner.train_step(batch, algo)
        sync(device)
        upd.append(time.perf_counter() - t)
        t = time.perf_counter()
        reference.logprobs(batch.prompt_ids, batch.completion_ids)
        sync(device)
        ref.append(time.perf_counter() - t)
    fwd = 2 * (weights["body"] * m["tokens_forward"] + weights["head"] * m["head_positions"])
    tokens = sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))
    med = statistics.median
    return {
        "shape": shape, "sequences": len(batch.completion_ids), "tokens": tokens, "device": device,
        "precision": learner.precision, "micro_batch_size": learner.micro_batch_size,
        "max_tokens_per_micro_batch": learner.max_tokens, "micro_batches": int(m["micro_batches"]),
        "update_s": [round(x, 4) for x in upd], "reference_s": [round(x, 4) for x in ref],
        "update_tokens_per_s": round(tokens / med(upd), 1),
        "update_tflops": round(3 * fwd / med(upd) / 1e12, 4), "reference_tflops": round(fwd / med(ref) / 1e12, 4),
        "update_peak_share": round(3 * fwd / med(upd) / 1e9 / peak_gflops, 3),
        "reference_peak_share": round(fwd / med(ref) / 1e9 / peak_gflops, 3),
        "matmul_peak_gflops": round(peak_gflops, 1), "peak_memory_gib": round(peak_gib(device) or 0.0, 2),
        "planned_memory_gib": round(planned_gib(learner, device, with_reference=True), 2),  # common/memory.py
    }


def measure_workers(rank: int, learner, shape: str, repeats: int, device: str, warmup: bool,
                    keep_first: bool = False) -> dict:
    """One worker's share of `shape`'s updates (its balanced whole groups; the batch's totals), timed. With
    `keep_first`, worker 0 also returns the whole weights after the first (warm-up) update (an equivalence figure)."""
    import dataclasses

    from learner.distributed import balanced_shards, prompt_units
    from learner.fsdp import state_bytes
    from learner.policy import AlgoParams

    batch = make_batch(shape, learner.model.config.vocab_size)
    zeros = [[0.0] * len(c) for c in batch.completion_ids]  # values do not change the work a step does
    batch = dataclasses.replace(batch, old_logprobs=zeros, ref_logprobs=zeros)
    lengths = [len(c) for c in batch.completion_ids]
    mine = batch.rows(balanced_shards(lengths, prompt_units(batch.prompt_ids), learner.dp.world_size)[rank])
    totals, algo = (len(lengths), sum(lengths)), AlgoParams()
    reset_peak(device)
    first = None
    if warmup or keep_first:
        learner.train_step(mine, algo, totals=totals)
        if keep_first:  # sharded: every worker gathers, worker 0 keeps
            arrays = learner.named_arrays()
            first = {k: v.copy() for k, v in arrays} if rank == 0 and arrays else None
    upd = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        learner.train_step(mine, algo, totals=totals)
        sync(device)
        upd.append(time.perf_counter() - t)
    held = state_bytes(learner.model, learner.opt)
    return {"update_s": upd, "state_gib": {k: round(v / 2**30, 4) for k, v in held.items()},
            "peak_memory_gib": round(peak_gib(device) or 0.0, 3), "planned_memory_gib": round(planned_gib(
                learner, device), 3), "rows": len(mine.completion_ids),
            "tokens": sum(len(c) for c in mine.completion_ids), "first": first}


def _worker(rank: int, world: int, port: int, path: str, opts: dict, shapes: list[str], queue) -> None:
    import os

    if opts["device"] == "cuda":
        os.environ["CUDA_VISIBLE_DEVICES"] = str(rank)  # one GPU a worker, before torch sees any
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from learner.policy import Learner

    learner = Learner(path, lr=1e-5, total_steps=1000, warmup_ratio=0.0, micro_batch_size=opts["micro_batch_size"],
                      precision=opts["precision"], threads=opts["threads"], max_tokens_per_micro_batch=opts["max_tokens"],
                      sharding=opts["sharding"], offload=opts["offload"])
    learner.init_data_parallel("127.0.0.1", port, world, rank, "nccl" if opts["device"] == "cuda" else "gloo")
    for shape in shapes:
        queue.put((shape, rank, measure_workers(rank, learner, shape, opts["repeats"], opts["device"],
                                                not opts["no_warmup"], opts.get("keep_first", False)),
                   learner.precision))


def run_workers(args, path: str, shapes: list[str]) -> list[dict]:
    """`args.workers` learner processes (`args`: this script's options); one row per shape."""
    import multiprocessing as mp

    from common.collective import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, args.workers, port, path, vars(args), shapes, queue))
             for r in range(args.workers)]
    for proc in procs:
        proc.start()
    got: dict = {}
    for _ in range(len(shapes) * args.workers):
        shape, rank, m, precision = queue.get(timeout=7200)
        got.setdefault(shape, {})[rank] = (m, precision)
    for proc in procs:
        proc.join(timeout=60)
    rows = []
    for shape in shapes:
        per = [got[shape][r][0] for r in range(args.workers)]
        upd = [max(ws) for ws in zip(*(m["update_s"] for m in per))]  # a step ends with its slowest worker
        rows.append({"shape": shape, "workers": args.workers, "sharding": args.sharding, "offload": args.offload,
                     "device": args.device, "precision": got[shape][0][1], "update_s": [round(x, 4) for x in upd],
                     "rows_per_worker": [m["rows"] for m in per], "tokens_per_worker": [m["tokens"] for m in per],
                     "threads": args.threads, "first_update": per[0]["first"],
                     "state_gib_per_worker": [m["state_gib"] for m in per],
                     "state_total_gib_per_worker": [round(sum(m["state_gib"].values()), 4) for m in per],
                     "peak_memory_gib_per_worker": [m["peak_memory_gib"] for m in per],
                     "planned_memory_gib_per_worker": [m["planned_memory_gib"] for m in per]})
    return rows


def budget(arg: str):
    return None if arg == "none" else ("auto" if arg == "auto" else int(arg))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model", default=None, help="HF id, folder or embedded spec (default: the embedded SmolLM2)")
    p.add_argument("--random-init", metavar="MODEL_DIR", help="this folder's config and tokenizer, random weights")
    p.add_argument("--large", action="store_true", help="also the large shape (64 x 8, <= 512 tokens a sequence)")
    p.add_argument("--only-large", action="store_true", help="the large shape alone")
    p.add_argument("--max-tokens", type=budget, default="auto", help="learner.max_tokens_per_micro_batch (auto|none|N)")
    p.add_argument("--micro-batch-size", type=int, default=None, help="learner.micro_batch_size (default: none)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-warmup", action="store_true", help="time the first update too (the large shape on a CPU: an "
                                                            "update takes minutes and warm-up is a small part of it)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=1, help="learner processes (torch.distributed on this machine)")
    p.add_argument("--sharding", choices=["replicate", "fsdp"], default="replicate",
                   help="with --workers: replicated workers (DDP) or FSDP2 shards (learner/fsdp.py)")
    p.add_argument("--offload", action="store_true", help="fsdp: shards on the CPU between uses")
    args = p.parse_args(argv)
    import torch

    from common.precision import gemm_shapes, model_dims, time_gemms
    from learner.policy import Learner, Reference

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no GPU visible here")
    if args.device == "cpu":  # a learner on the CPU of a GPU machine
        import os

        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory(prefix="raygrpo-learner-bench-") as tmp:
        path = model_folder(args.model, args.random_init, Path(tmp))
        shapes = ["large"] if args.only_large else (["preset", "large"] if args.large else ["preset"])
        if args.workers > 1 or args.sharding == "fsdp":
            for row in run_workers(args, path, shapes):
                row.pop("first_update")
                print(json.dumps(row), flush=True)
            return 0
        kw = dict(micro_batch_size=args.micro_batch_size, precision=args.precision, threads=args.threads,
                  max_tokens_per_micro_batch=args.max_tokens)
        learner = Learner(path, lr=1e-5, total_steps=1000, warmup_ratio=0.0, **kw)
        reference = Reference(path, **kw)
        fp32, bf16 = time_gemms(args.device, gemm_shapes(*model_dims(learner.model.config)), budget_s=2.0)
        peak = bf16 if learner.precision == "bf16" else fp32
        weights = weight_counts(learner.model.config)
        for shape in shapes:
            print(json.dumps(measure(learner, reference, shape, args.repeats, args.device, weights, peak,
                                     warmup=not args.no_warmup)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
