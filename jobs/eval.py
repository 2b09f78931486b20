"""Evaluate a model or checkpoint on any task: every metric of the task, with seeded bootstrap 95% CIs.

Greedy by default: each metric of the task's scorer (MLQA: F1, EM and answer length under the official
metric of the data's language; arithmetic and Countdown: accuracy, ...), with CIs over items resampled.
With `--samples n`, n sampled answers per item (T, top-p as in training), reported as a distribution: each
of the n "runs" (the j-th sample of every item) gets its metrics, and the table gives their mean, std, min
and max, best-of-n of the primary metric, and the task's own per-item statistics of the n samples (MLQA:
all-agree fraction and majority vote; domain QA: consistency). Generation goes through the rollout engines
(vLLM actors on Ray, or the HF backend), in batches, with a progress bar and throughput.

The task and data come from --run (a run dir's config.yaml), --config (a preset) or --task, in that order;
--data replaces the source. --split picks a split as the job builds it (eval, test, or a task's extra
held-out set such as arithmetic's gsm8k); `all` is every example of the source.

  python jobs/eval.py --model embedded:smollm2-135m-instruct --data xquad:de --limit 200
  python jobs/eval.py --model runs/R/checkpoints/best --run runs/R --split test     # the run's test split
  python jobs/eval.py --model ... --task arithmetic --split gsm8k --max-new-tokens 256 --limit 200
  python jobs/eval.py --model ... --config jobs/configs/domain_qa_sft_grpo.yaml --split eval --samples 3
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from common import console  # noqa: E402
from rewards.errors import RewardError  # noqa: E402
from tasks.base import LENGTH_METRIC  # noqa: E402
from trainer.evaluate import answer, sample_distribution, summarize  # noqa: E402  (tests import them from here)


def parse_args(argv=None, prog: str | None = None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded:smollm2-135m-instruct", help="HF id, folder, checkpoint or embedded:")
    p.add_argument("--run", help="a run dir: its config.yaml gives task, data and splits")
    p.add_argument("--config", help="a preset (jobs/configs/*.yaml) giving task, data and splits")
    p.add_argument("--task", help="task name (default: the run's / preset's, else mlqa)")
    p.add_argument("--data", help="data source, e.g. xquad:<lang>, mlqa-de, a SQuAD-format .json (default: the "
                                  "config's)")
    p.add_argument("--lang", help="QA metric language (default: from --data, e.g. xquad:de -> de; else en)")
    p.add_argument("--split", default="all",
                   help="all | train | eval | test | a task's extra held-out set (arithmetic: gsm8k). With --data of "
                        "another language of a parallel set (XQuAD), the same questions in that language")
    p.add_argument("--limit", type=int, help="evaluate only the first N items (after the split)")
    p.add_argument("--samples", type=int, default=0, help="n sampled answers per item (0 = greedy only)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0, help="sampling seed and bootstrap seed")
    p.add_argument("--max-prompt-tokens", type=int, help="default: the config's rollout.max_prompt_tokens")
    p.add_argument("--max-new-tokens", type=int, help="default: the config's rollout.max_new_tokens")
    p.add_argument("--engine", choices=["vllm", "hf"], help="default: the config's rollout.engine")
    p.add_argument("--engines", type=int, default=1, help="rollout actors; items are sharded across them")
    p.add_argument("--batch", type=int, default=128, help="items per progress update")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--inprocess", action="store_true", help="no Ray: the engine in this process")
    where.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a new local cluster)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value on top of the run/preset, e.g. "
                   "task.params.few_shot=4 (the label tasks' few-shot baseline)")
    p.add_argument("--out", help="write the result (with per-item scores) to this JSON file")
    p.add_argument("--verbose", action="store_true", help="engine and library logs on the console too (else they go "
                                                          "to logs/ beside --out, in --run, or in the temp folder)")
    return p.parse_args(argv)


def job_config(args):
    """The config whose task, data and splits this eval uses, with --task/--data/--lang on top."""
    from common.config import load_config

    if args.run:
        path = Path(args.run) / "config.yaml"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found; --run needs a run dir written by jobs/train.py")
    else:
        path = args.config
    cfg = load_config(path, args.overrides)
    if args.task and args.task != cfg.task.name:  # another task: the config's task params do not carry over
        cfg = load_config(path, [f"task.name={args.task}", "task.params={}", *args.overrides])
    return cfg


def load_items(args) -> tuple[object, list, str, list]:
    """(config, items, source, train) from the config, --data and --split; `train` is the run's training split
    where the split is one of the run's (few-shot demonstrations come from it), else []."""
    from tasks.registry import task_class

    cfg = job_config(args)
    cls = task_class(cfg.task.name)
    raw = dict(cfg.task.params)
    if args.data and "lang" in raw:
        raw.pop("lang")  # another source's language is inferred from it
    if args.lang:
        raw["lang"] = args.lang
    params = cls.make_params(raw)
    run_source = cfg.data.source or cls.default_source
    source = args.data or run_source
    train: list = []
    if args.split == "all":
        data = cfg.data if not args.data else cfg.data.model_copy(update={"limit": None})
        items = cls.all_examples(source, data, params)
    else:
        splits, _ = cls.load(run_source, cfg.data, params)
        if args.split not in splits:
            hint = " (data.test_size is unset in this config)" if args.split == "test" else ""
            raise SystemExit(f"error: task {cls.name} has no split {args.split!r} with this config{hint}; it has "
                             f"{', '.join(splits)} (or --split all)")
        items, train = splits[args.split], splits.get("train", [])
        if source != run_source:
            # Another language of a parallel set (XQuAD shares question ids across languages): the same held-out
            # questions, translated, so no question the model trained on in English is scored in German.
            by_id = {ex.id: ex for ex in cls.all_examples(source, cfg.data.model_copy(update={"limit": None}), params)}
            items = [by_id[ex.id] for ex in items if ex.id in by_id]
            if not items:
                raise SystemExit(f"error: no question of {source} has an id of the run's {args.split} split "
                                 f"({run_source}); --split selects by id and needs a parallel set like XQuAD")
    return (cfg, cls, params), (items[: args.limit] if args.limit else items), source, train


def evaluate(args, fleet=None) -> dict:
    """The evaluation `args` ask for; on `fleet` (a Fleet with engines of this model, or a FleetPool that lends one:
    cluster/fleet.py) where given, else on a fleet of its own."""
    from cluster.engines import Engines
    from cluster.fleet import Roles, acquire, engines_spec
    from cluster.groups import get
    from common.models import load_tokenizer, resolve_model
    from common.types import Sampling
    from rollout.engine import Engine

    (cfg, cls, params), items, source, train = load_items(args)
    if not items:
        raise SystemExit(f"error: no items to evaluate in {source}")
    model_path = resolve_model(args.model)
    r = cfg.rollout.model_copy(update={k: v for k, v in (("engine", args.engine),
                                                         ("max_prompt_tokens", args.max_prompt_tokens),
                                                         ("max_new_tokens", args.max_new_tokens)) if v is not None})
    from tasks.registry import check_rewards, reward_components

    task = cls({"eval": items, **({"train": train} if train else {})}, params, load_tokenizer(model_path),
               r.max_prompt_tokens, rewards=tuple(reward_components(cfg)))  # the prompts task scores with them
    check_rewards(task, cfg)
    task, index_dir, gold_docs, in_prompt = run_retrieval(cfg, cls, params, task, source)
    prompts, pstats = task.prompts("eval"), task.prompt_stats("eval")
    print(f"[eval] {args.model} on {task.name} {source} ({args.split}, {len(items)} items)", flush=True)
    logs = console.attach(Path(args.out).parent / "logs" if args.out else Path(args.run) / "logs" if args.run
                          else Path(tempfile.gettempdir()) / "raygrpo-logs" / f"eval-{os.getpid()}")
    if logs:
        print(f"[eval] engine and library logs: {logs.parent}", flush=True)
    backend = "inprocess" if args.inprocess else "ray"
    tools = tool_call(cfg, model_path, index_dir)
    spec = engines_spec(r, model_path, args.engines, backend, args.address, tools=1 if tools else 0)
    roles = Roles(init_path=model_path, tools=tools)
    fleet, owned = acquire(fleet, spec, roles, logs.parent if logs else None)
    try:
        group = fleet.rollout
        get(group.call_all(Engine.greedy, prompts[:1], 1))  # vLLM compiles on first use: keep it out of the timing
        sampling = Sampling(args.samples, args.temperature, args.top_p, r.max_new_tokens) if args.samples else None
        engines = Engines(group)
        turns = with_tools(cfg, engines, fleet.tools, task.tokenizer.decode)
        ans = answer(engines, task, items, prompts, r.max_new_tokens, sampling, args.seed, args.batch,
                     progress=True, turns=turns)
        texts, per, seconds = ans.texts, dict(ans.per_item), ans.seconds
        if in_prompt is not None:  # retrieval: the gold paragraph among the prompt's passages
            per["gold_retrieved"] = in_prompt
        if ans.rollout is not None:  # tools: turns, calls, tokens, and the gold paragraph among the search hits
            from rollout.turns import sample_turns

            per.update(sample_turns(ans.rollout, gold_docs))
        out = {"model": args.model, "task": task.name, "primary_metric": task.primary_metric, "data": source,
               "split": args.split, **({"lang": items[0].lang} if hasattr(items[0], "lang") else {}),
               **summarize(per, args.seed), "seconds": seconds, "questions_per_s": len(texts) / seconds,
               "gen_tokens_per_s": sum(per[LENGTH_METRIC]) / seconds, "prompts_truncated": pstats["truncated"],
               "engine": r.engine, "engines": args.engines, "max_new_tokens": r.max_new_tokens}
        if ans.sampled is not None:
            out["sampling"] = {**sample_distribution(task, ans.sampled, items, args.samples),
                               "temperature": args.temperature, "top_p": args.top_p, "seconds": ans.sampled_seconds}
    finally:
        if owned:
            fleet.close()
    out["per_question"] = [{"id": getattr(ex, "id", str(i)), **{k: v[i] for k, v in per.items()},
                            "prediction": texts[i][:300]} for i, ex in enumerate(items)]
    return out


def run_retrieval(cfg, cls, params, task, source: str):
    """The run's retrieval, as it trained: (the task, with the eval examples' contexts replaced by their top-k
    passages where retrieval.enabled; the dense index's folder where retrieval or the search tool reads one, else
    None; each example's gold document id in it, or None; where retrieval.enabled, 1.0 per example whose gold
    paragraph is among its passages). The index covers `source`'s contexts as the training job's did, so a run's
    own index is loaded, not rebuilt."""
    search = any(t.name == "search" and not t.fn for t in cfg.tools.use)
    if not (cfg.retrieval.enabled or search):
        return task, None, None, None
    from retrieval.retriever import Retriever
    from trainer.rag import corpus, open_index, with_passages

    splits, stats = cls.load(source, cfg.data, params)  # the run's own index is found by its source's name
    whole = cls(splits, params, task.tokenizer, task.max_prompt_tokens, stats={"source": source, **stats})
    _, status, index_dir, n_docs = open_index(whole, cfg)
    print(f"[eval] dense index over {n_docs} contexts at {index_dir} ({status})", flush=True)
    doc_of = {doc: i for i, doc in enumerate(corpus(whole))}
    examples = task.splits["eval"]
    gold = [doc_of.get(task.retrieval_document(ex)) for ex in examples]
    if not cfg.retrieval.enabled:
        return task, index_dir, gold, None
    hits = Retriever(str(index_dir), cfg.retrieval.encoder).retrieve([task.retrieval_query(ex) for ex in examples],
                                                                    cfg.retrieval.k)
    found = [None if g is None else float(any(h["doc_id"] == g for h in hs)) for g, hs in zip(gold, hits)]
    return with_passages(task, "eval", hits), index_dir, gold, found


def tool_call(cfg, model_path: str, index_dir):
    """The tool actor's constructor arguments where the run's answers are multi-turn, else None."""
    from common.plan import make_plan

    if make_plan(cfg).turns is None:
        return None
    from cluster.fleet import Call

    t = cfg.tools
    return Call(([u.model_dump() for u in t.use], model_path, t.timeout_s, t.template,
                 str(index_dir) if index_dir else None, cfg.retrieval.encoder))


def with_tools(cfg, engines, box, decode):
    """The run's multi-turn generation with its tools (`box`: the fleet's tool actor; `decode`: the policy
    tokenizer's), or None for single-turn runs."""
    from common.plan import make_plan

    turns = make_plan(cfg).turns
    if turns is None:
        return None
    from cluster.turns import generate_turns
    from tools.toolbox import ToolBox

    return lambda prompts, sampling, seed: generate_turns(
        engines.generate, lambda calls, rooms: box.run(ToolBox.run, calls, rooms), prompts, sampling, seed,
        turns.tools, turns.max_turns, turns.max_total_tokens, decode)


def _label(metric: str) -> str:
    return {"f1": "F1", "em": "EM"}.get(metric, metric)


def report(out: dict) -> None:
    """The result's lines on the console: the primary metric with its CI, the others, throughput; the samples'."""
    p = out["primary_metric"]
    lo, hi = out[f"{p}_ci"]
    others = "  ".join(f"{_label(k)} {out[k]:.3f}" for k in out.get("per_question", [{}])[0]
                       if k not in ("id", "prediction", p, LENGTH_METRIC) and k in out)
    print(f"[eval] {_label(p)} {out[p]:.3f} [{lo:.3f}, {hi:.3f}]  {others}  len {out[LENGTH_METRIC]:.1f} tokens  "
          f"n {out['n']}  {out['questions_per_s']:.2f} q/s  {out['gen_tokens_per_s']:.0f} tok/s", flush=True)
    if "sampling" in out:
        s = out["sampling"]
        extra = "  ".join(f"{k} {v:.3f}" for k, v in s.items() if not any(
            k.startswith(m) for m in out["per_question"][0]) and isinstance(v, float) and k not in (
            "temperature", "top_p", "seconds"))
        print(f"[eval] {s['samples']} samples: {_label(p)} {s[f'{p}_mean']:.3f} ± {s[f'{p}_std']:.3f} "
              f"(min {s[f'{p}_min']:.3f}, max {s[f'{p}_max']:.3f}), best-of-n {s[f'best_of_n_{p}']:.3f}  {extra}",
              flush=True)


def main(argv=None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    console.quiet(args.verbose)
    if args.samples < 0 or args.engines < 1 or args.batch < 1:
        print("error: --samples must be >= 0, --engines and --batch >= 1", file=sys.stderr)
        return 2
    try:
        out = evaluate(args)
    except (FileNotFoundError, ValueError) as err:  # bad model/data/split/config: the message names the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RewardError as err:  # a user's reward function or server failed on an answer
        print(f"error: {err}", file=sys.stderr)
        return 3
    report(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False))
        print(f"[eval] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
