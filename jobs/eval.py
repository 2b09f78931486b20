"""Evaluate a model or checkpoint on extractive QA with the official metric of the data's language.

Greedy by default: F1, EM, mean answer length in tokens, and seeded bootstrap 95% CIs (questions
resampled). With `--samples n`, n sampled answers per question (T, top-p as in training), reported
as a distribution: each of the n "runs" (the j-th sample of every question) gets its F1/EM, and
the table gives their mean, std, min and max, plus per-question agreement, best-of-n and majority vote.
Generation goes through the rollout engines (vLLM actors on Ray, or the HF backend), in batches,
with a progress bar and throughput.

  python jobs/eval.py --model embedded:smollm2-135m-instruct --data xquad:de --limit 200
  python jobs/eval.py --model runs/R/checkpoints/best --run runs/R --split test     # the run's test split
  python jobs/eval.py --model ... --data mlqa-de --samples 5 --out results.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from common.stats import bootstrap_ci  # noqa: E402
from jobs.qa_task import score_answers as score  # noqa: E402
from rewards.qa import MLQA_LANGS, extract_answer, normalize_answer, qa_scores  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded:smollm2-135m-instruct", help="HF id, folder, checkpoint or embedded:")
    p.add_argument("--data", help="xquad:<lang>, mlqa-de, or a SQuAD-format .json (default: the run's data)")
    p.add_argument("--lang", help="metric language (default: from --data, e.g. xquad:de -> de; else en)")
    p.add_argument("--run", help="a run dir: its config.yaml gives data and split (with --split)")
    p.add_argument("--split", choices=["all", "test", "eval"], default="all",
                   help="with --run: the run's held-out test (reports) or eval split; with --data of another "
                        "language of a parallel set (XQuAD), the same questions in that language")
    p.add_argument("--limit", type=int, help="evaluate only the first N questions (after the split)")
    p.add_argument("--samples", type=int, default=0, help="n sampled answers per question (0 = greedy only)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0, help="sampling seed and bootstrap seed")
    p.add_argument("--max-prompt-tokens", type=int, default=512)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    p.add_argument("--engines", type=int, default=1, help="rollout actors; questions are sharded across them")
    p.add_argument("--batch", type=int, default=128, help="questions per progress update")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--inprocess", action="store_true", help="no Ray: the engine in this process")
    where.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a new local cluster)")
    p.add_argument("--out", help="write the result (with per-question scores) to this JSON file")
    return p.parse_args(argv)


def infer_lang(source: str) -> str:
    """'xquad:de' -> 'de', 'mlqa-de' -> 'de', anything else -> 'en'."""
    tail = source.split(":")[-1] if source.startswith("xquad:") else source.removeprefix("mlqa-")
    return tail if tail in MLQA_LANGS else "en"


def load_questions(args) -> tuple[list, str, str]:
    """(examples, source, lang) from --data or the run's config (+ --split)."""
    from common.config import load_config
    from common.data import load_examples, split_examples

    cfg = None
    if args.run:
        cfg_path = Path(args.run) / "config.yaml"
        if not cfg_path.is_file():
            raise SystemExit(f"error: {cfg_path} not found; --run needs a run dir written by jobs/grpo_mlqa.py")
        cfg = load_config(cfg_path)
    elif args.split != "all":
        raise SystemExit("error: --split test/eval needs --run <run dir> (the split is rebuilt from its config)")
    source = args.data or (cfg.data.source if cfg else None)
    if source is None:
        raise SystemExit("error: give --data (e.g. xquad:de) or --run <run dir>")
    lang = args.lang or (cfg.data.lang if cfg and not args.data else infer_lang(source))
    examples, _ = load_examples(source, lang, limit=cfg.data.limit if cfg and not args.data else None)
    if args.split != "all":
        d = cfg.data
        if args.split == "test" and not d.test_size:
            raise SystemExit(f"error: run {args.run} has no test split (data.test_size unset); use --split eval")
        run_examples = examples if source == d.source else load_examples(d.source, d.lang, limit=d.limit)[0]
        train, eval_, test = split_examples(run_examples, d.eval_fraction, d.split_seed, d.eval_size, d.test_size)
        wanted = test if args.split == "test" else eval_
        if source != d.source:
            # Another language of a parallel set (XQuAD shares question ids across languages): the same held-out
            # questions, translated, so no question the model trained on in English is scored in German.
            by_id = {ex.id: ex for ex in examples}
            wanted = [by_id[ex.id] for ex in wanted if ex.id in by_id]
            if not wanted:
                raise SystemExit(f"error: no question of {source} has an id of the run's {args.split} split "
                                 f"({d.source}); --split selects by id and needs a parallel set like XQuAD")
        examples = wanted
    return examples[: args.limit] if args.limit else examples, source, lang


def generate(group, prompts: list[list[int]], args, sampled: bool) -> list[str]:
    """Batched generation through the engines with a progress bar; [Q] (greedy) or [Q * n] texts."""
    from tqdm import tqdm

    from cluster.groups import get, shard

    texts: list[str] = []
    bar = tqdm(total=len(prompts), desc="sampled" if sampled else "greedy", unit="q", file=sys.stdout,
               mininterval=5.0, dynamic_ncols=False, ncols=90)
    for start in range(0, len(prompts), args.batch):
        chunk = prompts[start:start + args.batch]
        shards = shard(chunk, len(group.members))
        if sampled:
            futs = group.map_shards("generate", [(s, args.samples, args.temperature, args.top_p, args.max_new_tokens,
                                                   args.seed + 7919 * (start + i)) for i, s in enumerate(shards)])
            texts += [t for r in get(futs) for t in r.texts]
        else:
            futs = group.map_shards("greedy", [(s, args.max_new_tokens) for s in shards])
            texts += [t for part in get(futs) for t in part]
        bar.update(len(chunk))
    bar.close()
    return texts


def summarize(per: dict, seed: int) -> dict:
    n = len(per["f1"])
    return {"n": n, "f1": sum(per["f1"]) / n, "em": sum(per["em"]) / n, "len": sum(per["len"]) / n,
            "f1_ci": bootstrap_ci(per["f1"], seed=seed), "em_ci": bootstrap_ci(per["em"], seed=seed)}


def sample_distribution(texts: list[str], examples, lang: str, n: int, tokenizer) -> dict:
    """n runs of one sampled answer per question: mean/std/min/max of run F1 and EM, agreement, best-of-n
    and majority-vote F1."""
    runs = [score(texts[j::n], examples, lang, tokenizer) for j in range(n)]
    run_f1 = [sum(r["f1"]) / len(r["f1"]) for r in runs]
    run_em = [sum(r["em"]) / len(r["em"]) for r in runs]
    agree, best, vote = [], [], []
    for q, ex in enumerate(examples):
        answers = [extract_answer(t) for t in texts[q * n:(q + 1) * n]]
        norm = [normalize_answer(a, lang) for a in answers]
        agree.append(float(len(set(norm)) == 1))
        best.append(max(r["f1"][q] for r in runs))
        top = Counter(norm).most_common(1)[0][0]
        vote.append(qa_scores(answers[norm.index(top)], list(ex.answers), lang)[1])
    q = len(examples)
    return {"samples": n, "f1_mean": statistics.mean(run_f1), "f1_std": statistics.pstdev(run_f1),
            "f1_min": min(run_f1), "f1_max": max(run_f1), "em_mean": statistics.mean(run_em),
            "em_std": statistics.pstdev(run_em), "agree_frac": sum(agree) / q, "best_of_n_f1": sum(best) / q,
            "majority_vote_f1": sum(vote) / q,
            "len_mean": statistics.mean(x for r in runs for x in r["len"])}


def start_engines(args, model_path: str):
    from cluster import runtime
    from cluster.groups import ActorGroup
    from rollout.engine import HFEngine, VLLMEngine

    backend = "inprocess" if args.inprocess else "ray"
    runtime.start(backend, args.address, None, runtime.actor_env(None, 2.0))
    cls, kw = (HFEngine, {}) if args.engine == "hf" else (VLLMEngine, {"max_model_len": 2048, "kv_cache_gib": 2.0})
    return backend, ActorGroup.create("rollout", cls, args.engines, backend, args=(model_path,), kwargs=kw,
                                      num_cpus=0.5)


def evaluate(args) -> dict:
    from cluster import runtime
    from common.data import build_prompts
    from common.models import load_tokenizer, resolve_model

    examples, source, lang = load_questions(args)
    if not examples:
        raise SystemExit(f"error: no questions to evaluate in {source}")
    model_path = resolve_model(args.model)
    tokenizer = load_tokenizer(model_path)
    prompts, pstats = build_prompts(tokenizer, examples, args.max_prompt_tokens)
    print(f"[eval] {args.model} on {source} ({args.split}, {len(examples)} questions, lang {lang})", flush=True)
    backend, group = start_engines(args, model_path)
    try:
        from cluster.groups import get

        get(group.call_all("greedy", prompts[:1], 1))  # vLLM compiles on first use: keep it out of the timing
        t = time.perf_counter()
        texts = generate(group, prompts, args, sampled=False)
        seconds = time.perf_counter() - t
        per = score(texts, examples, lang, tokenizer)
        out = {"model": args.model, "data": source, "lang": lang, "split": args.split, **summarize(per, args.seed),
               "seconds": seconds, "questions_per_s": len(texts) / seconds,
               "gen_tokens_per_s": sum(per["len"]) / seconds, "prompts_truncated": pstats["truncated"],
               "engine": args.engine, "engines": args.engines}
        if args.samples > 0:
            t = time.perf_counter()
            sampled = generate(group, prompts, args, sampled=True)
            out["sampling"] = {**sample_distribution(sampled, examples, lang, args.samples, tokenizer),
                               "temperature": args.temperature, "top_p": args.top_p,
                               "seconds": time.perf_counter() - t}
    finally:
        runtime.shutdown(backend)
    out["per_question"] = [{"id": ex.id, "f1": f, "em": e, "len": n, "prediction": x[:300]}
                           for ex, f, e, n, x in zip(examples, per["f1"], per["em"], per["len"], texts)]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.samples < 0 or args.engines < 1 or args.batch < 1:
        print("error: --samples must be >= 0, --engines and --batch >= 1", file=sys.stderr)
        return 2
    try:
        out = evaluate(args)
    except (FileNotFoundError, ValueError) as err:  # bad model/data/split: the message names the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    lo, hi = out["f1_ci"]
    print(f"[eval] F1 {out['f1']:.3f} [{lo:.3f}, {hi:.3f}]  EM {out['em']:.3f}  len {out['len']:.1f} tokens  "
          f"n {out['n']}  {out['questions_per_s']:.2f} q/s  {out['gen_tokens_per_s']:.0f} tok/s", flush=True)
    if "sampling" in out:
        s = out["sampling"]
        print(f"[eval] {s['samples']} samples: F1 {s['f1_mean']:.3f} ± {s['f1_std']:.3f} "
              f"(min {s['f1_min']:.3f}, max {s['f1_max']:.3f}), agree {s['agree_frac']:.2f}, "
              f"best-of-n {s['best_of_n_f1']:.3f}, majority {s['majority_vote_f1']:.3f}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False))
        print(f"[eval] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
