"""The GPU path measured in one command, for the 15 minutes a GPU may be lent (DEVELOPERS.md, the device tool).

    python bench/gpu_check.py --prepare gpu_assets          # here, once: SmolLM2-135M's config and tokenizer, and a
                                                            # ~1.7B config beside it (git-ignored; carry the folder)
    python bench/gpu_check.py --assets gpu_assets --out $OUT   # on the GPU machine (torch + transformers + this repo)
    DRY=1 python bench/gpu_check.py --out /tmp/dry           # the same steps on this CPU with a tiny config (a test)

Steps, each with its own deadline; a step that fails is recorded and the others still run (exit 1 if any failed):
  env        torch, CUDA, the device, transformers
  learner    bench/learner.py --device cuda --large on SmolLM2-135M's config (random weights): seconds, MFU, memory
             (peak allocated beside the memory plan's figure for it, common/memory.py: planned_memory_gib)
  learner17  the same on the ~1.7B config (SmolLM2-1.7B's shape)
  fsdp       bench/learner.py --workers 1 --sharding fsdp --large: FSDP2 with NCCL and bf16 mixed precision on a GPU,
             the model built on the meta device and its shard read onto the GPU (learner/holder.py)
  gpu_tests  pytest -m gpu (the tests that need a GPU)
  hf_job     3 GRPO steps of docs/examples/your_task on the GPU, in process, rollout.engine=hf (no vLLM, no Ray)
  hf_async   the same with train.max_staleness=1 (the sample stream: generation ahead of the learner, docs/async.md)
Writes <out>/gpu_check.json (every step's result and parsed figures) and <out>/gpu_check.log (every command's
output). Needs no Ray, no vLLM, no data outside the repo; pydantic/pyyaml/safetensors travel as wheels if missing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_TESTS = [str(ROOT / "tests" / f) for f in ("common/test_device.py", "learner/test_fsdp.py",
                                                 "learner/test_shard_loading.py")]  # no Ray, no vLLM
LARGE_1_7B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                  num_key_value_heads=32)  # SmolLM2-1.7B's shape, SmolLM2-135M's vocabulary and tokenizer


def prepare(folder: Path, tiny: bool = False) -> None:
    """<folder>/smollm2 (config + tokenizer of the embedded policy) and <folder>/smollm2-1.7b (its ~1.7B shape);
    `tiny`: a tiny random config with the tests' tokenizer in both (the CPU dry run)."""
    from transformers import AutoConfig, AutoTokenizer

    if tiny:
        sys.path.insert(0, str(ROOT))
        from tests.tiny_models import char_tokenizer, tiny_llama_config

        for name, layers in (("smollm2", 2), ("smollm2-1.7b", 3)):
            tiny_llama_config(num_hidden_layers=layers, tie_word_embeddings=True).save_pretrained(folder / name)
            char_tokenizer().save_pretrained(folder / name)
        return
    sys.path.insert(0, str(ROOT))
    from common.models import resolve_model

    source = resolve_model("embedded:smollm2-135m-instruct")
    config, tok = AutoConfig.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    for name, changes in (("smollm2", {}), ("smollm2-1.7b", LARGE_1_7B)):
        for k, v in changes.items():
            setattr(config, k, v)
        config.save_pretrained(folder / name)
        tok.save_pretrained(folder / name)


def run(name: str, cmd: list[str], log, timeout: float, cwd: Path = ROOT, env: dict | None = None) -> dict:
    """One step: its command, exit code, seconds and the JSON lines it printed."""
    t = time.perf_counter()
    log.write(f"\n==== {name}: {' '.join(cmd)}\n")
    log.flush()
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **(env or {})})
        rc, text = out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as err:
        rc, text = 124, f"{err.stdout or ''}{err.stderr or ''}\n(timed out after {timeout:.0f} s)"
    log.write(text if isinstance(text, str) else text.decode(errors="replace"))
    log.flush()
    rows = [json.loads(line) for line in (text if isinstance(text, str) else "").splitlines()
            if line.startswith("{") and line.rstrip().endswith("}")]
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.perf_counter() - t, 1), "rows": rows,
            "tail": (text if isinstance(text, str) else "")[-1500:] if rc else ""}


def env_info() -> dict:
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
            "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def steps(assets: Path, out: Path, dry: bool) -> list[tuple[str, list[str], float, dict]]:
    """(name, command, deadline in s, options) of each step: the GPU's, or the CPU dry run's small versions."""
    py, bench = sys.executable, str(ROOT / "bench" / "learner.py")
    device = ["--device", "cpu" if dry else "cuda"]
    big = ["--repeats", "1", "--precision", "fp32", "--threads", "2"] if dry else ["--large", "--repeats", "2"]
    small, large = str(assets / "smollm2"), str(assets / "smollm2-1.7b")
    example = ROOT / "docs" / "examples" / "your_task"

    def job(name: str, steps_: int, *extra: str) -> list[str]:
        return [py, str(ROOT / "jobs" / "train.py"), "--config", str(example / "job.yaml"), "--inprocess",
                "rollout.engine=hf", f"model.policy={out / 'policy'}", f"train.output_dir={out / 'runs'}",
                f"train.run_name={name}", f"train.phases.0.steps={steps_}", "train.eval_every=100",
                "train.eval_at_start=false", "logging.mlflow=false", "rollout.max_new_tokens=32", *extra]

    return [
        ("learner", [py, bench, *device, "--random-init", small, *big], 150, {}),
        ("learner17", [py, bench, *device, "--random-init", large, *(big if dry else ["--large", "--repeats", "1"])],
         240, {}),
        ("fsdp", [py, bench, *device, "--random-init", small, "--workers", "1", "--sharding", "fsdp", *big], 150, {}),
        ("gpu_tests", [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *GPU_TESTS], 120, {}),
        ("hf_job", job("gpu-check", 1 if dry else 3), 150, {"cwd": example}),
        ("hf_async", job("gpu-check-async", 2 if dry else 3, "train.max_staleness=1"), 150, {"cwd": example}),
    ]


def policy(assets: Path, out: Path) -> None:
    """The hf job's policy: SmolLM2-135M's config and tokenizer with random weights (what the box can hold)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    src = assets / "smollm2"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src)).save_pretrained(out / "policy")
    AutoTokenizer.from_pretrained(src).save_pretrained(out / "policy")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prepare", metavar="DIR", help="write the configs and tokenizer the check needs, then stop")
    p.add_argument("--assets", default=str(ROOT / "gpu_assets"), help="a folder written by --prepare")
    p.add_argument("--out", default=os.environ.get("OUT", str(ROOT / "runs" / "gpu_check")))
    p.add_argument("--only", help="comma-separated steps (learner,learner17,fsdp,gpu_tests,hf_job,hf_async)")
    args = p.parse_args(argv)
    dry = os.environ.get("DRY", "") not in ("", "0")
    if args.prepare:
        prepare(Path(args.prepare))
        print(f"wrote {args.prepare}/smollm2 and {args.prepare}/smollm2-1.7b; carry that folder to the GPU machine")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    assets = Path(args.assets)
    if dry:  # the CPU dry run: tiny configs in place of SmolLM2's
        assets = out / "assets"
        prepare(assets, tiny=True)
    if not (assets / "smollm2" / "config.json").is_file():
        print(f"error: {assets}/smollm2 not found; run `python bench/gpu_check.py --prepare {assets}` first",
              file=sys.stderr)
        return 2
    result: dict = {"dry_run": dry, "env": env_info(), "steps": {}}
    only = set(args.only.split(",")) if args.only else None
    with open(out / "gpu_check.log", "w") as log:
        for name, cmd, timeout, opts in steps(assets, out, dry):
            if only and name not in only:
                continue
            if name in ("hf_job", "hf_async") and not (out / "policy" / "config.json").is_file():
                policy(assets, out)
            result["steps"][name] = r = run(name, cmd, log, timeout, cwd=opts.get("cwd", ROOT))
            print(f"[gpu_check] {name}: rc {r['rc']} in {r['seconds']} s", flush=True)
            (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    failed = [n for n, r in result["steps"].items() if r["rc"] not in (0, 5)]  # 5: pytest found no gpu test to run
    result["failed"] = failed
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    print(f"[gpu_check] wrote {out / 'gpu_check.json'} and {out / 'gpu_check.log'}" +
          (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
