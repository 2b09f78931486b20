"""Dense retrieval on XQuAD English: index build time, queries/s, recall@k, and end-to-end F1 of the
policy with the gold context vs the retrieved top-k passages vs no context. Writes docs/retrieval.md.

Corpus: every distinct context of XQuAD-en (240 paragraphs), chunked by the policy tokenizer
(256 tokens, 32 overlap), embedded with the packaged all-MiniLM-L6-v2. A chunk is relevant to a
question when it comes from the question's own paragraph and contains a gold answer string.
End-to-end F1 uses the job's held-out split (seed 42, 200 questions), greedy vLLM decoding and the
official metric, so the gold-context row is the same measurement as the job's eval.

    python bench/retrieval.py [--questions 200] [--models embedded:smollm2-135m-instruct,<ckpt dir>]
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dataclasses  # noqa: E402

from bench.report import machine  # noqa: E402
from common.data import grouped_split  # noqa: E402
from common.models import load_tokenizer, resolve_model  # noqa: E402
from common.stats import bootstrap_ci  # noqa: E402
from retrieval.chunking import unique_contexts  # noqa: E402
from retrieval.encoder import load_encoder  # noqa: E402
from retrieval.index import build_index  # noqa: E402
from retrieval.metrics import recall_at_k, relevant_chunks  # noqa: E402
from retrieval.retriever import Retriever, format_passages  # noqa: E402
from tasks.mlqa import MLQAParams, MLQATask  # noqa: E402
from tasks.squad import load_examples  # noqa: E402

POLICY = "embedded:smollm2-135m-instruct"


def index_and_recall(examples, tokenizer, index_dir: Path, chunk_tokens: int, overlap: int, k: int) -> dict:
    docs, doc_of = unique_contexts(examples)
    encoder = load_encoder(None)
    index = build_index(docs, tokenizer, encoder, chunk_tokens, overlap, tokenizer_name=POLICY)
    index.save(index_dir)
    questions = [ex.question for ex in examples]
    local = Retriever(str(index_dir), encoder)
    local.retrieve(questions[:8], 10)                      # warm-up (first encode allocates)
    t = time.perf_counter()
    hits = local.retrieve(questions, 10)
    local_qps = len(questions) / (time.perf_counter() - t)
    ranked = [[h["chunk_id"] for h in row] for row in hits]
    relevant = [relevant_chunks(index.chunks, d, ex.answers) for ex, d in zip(examples, doc_of)]
    return {"docs": len(docs), "chunks": len(index), "build_s": index.meta["build_seconds"],
            "local_qps": local_qps, "ray_qps": ray_qps(index_dir, questions), "questions": len(questions),
            "no_relevant": sum(not r for r in relevant), **recall_at_k(ranked, relevant, (1, k, 10)),
            "top": {ex.id: row[:k] for ex, row in zip(examples, hits)}}


def ray_qps(index_dir: Path, questions: list[str], actors: int = 1, batch: int = 256) -> float:
    """Queries/s through a Retriever Ray actor on a local cluster, the path the job uses."""
    from cluster import runtime
    from cluster.groups import ActorGroup, get

    runtime.start("ray", None, 2, runtime.actor_env(None, 1.0))
    try:
        group = ActorGroup.create("retrieval", Retriever, actors, "ray", args=(str(index_dir), None), num_cpus=0.1)
        get(group.call(Retriever.retrieve, questions[:8], 3))   # actor start + encoder load, not timed
        t = time.perf_counter()
        get(group.map_shards(Retriever.retrieve, [(questions[i:i + batch], 3) for i in range(0, len(questions), batch)]))
        return len(questions) / (time.perf_counter() - t)
    finally:
        runtime.shutdown("ray")


def end_to_end(model: str, eval_, tokenizer, top: dict, max_prompt_tokens: int, max_new_tokens: int) -> dict:
    from rollout.engine import VLLMEngine

    engine = VLLMEngine(resolve_model(model), max_model_len=2048, kv_cache_gib=2.0)
    task = MLQATask({"eval": eval_}, MLQAParams(), tokenizer, max_prompt_tokens)
    rows = {}
    for name, ctx in (("gold", lambda ex: ex.context), ("retrieved", lambda ex: format_passages(top[ex.id])),
                      ("none", lambda ex: "")):
        built = [task.prompt_ids(dataclasses.replace(ex, context=ctx(ex))) for ex in eval_]
        t = time.perf_counter()
        texts = engine.greedy([ids for ids, _ in built], max_new_tokens)
        seconds = time.perf_counter() - t
        per = task.score(texts, eval_)
        f1s, ems = per["f1"], per["em"]
        rows[name] = {"f1": sum(f1s) / len(f1s), "f1_ci": bootstrap_ci(f1s), "em": sum(ems) / len(ems),
                      "em_ci": bootstrap_ci(ems), "n": len(texts), "seconds": seconds,
                      "prompt_tokens": sum(len(ids) for ids, _ in built) / len(built),
                      "truncated": sum(cut for _, cut in built)}
        print(f"[e2e] {model} {name}: F1 {rows[name]['f1']:.3f} EM {rows[name]['em']:.3f} ({seconds:.0f} s)",
              flush=True)
    del engine
    return rows


def report(r: dict, e2e: dict, args) -> str:
    k = args.k
    lines = [
        "# Dense retrieval on XQuAD English", "",
        "Generated by `python bench/retrieval.py " + " ".join(sys.argv[1:]) + f"` on {platform.node()} "
        f"({time.strftime('%Y-%m-%d')}): {machine()}.", "",
        f"Corpus: every distinct XQuAD-en context ({r['docs']} paragraphs) chunked by the policy tokenizer "
        f"({args.chunk_tokens} tokens, overlap {args.overlap}) into {r['chunks']} chunks, embedded with the "
        "packaged all-MiniLM-L6-v2 (384-d), exact cosine search. A chunk is relevant when it is from the "
        "question's own paragraph and contains a gold answer.", "",
        "## Retrieval", "",
        "| questions | recall@1 | recall@3 | recall@10 | no relevant chunk | index build s | queries/s in-process "
        "| queries/s via Ray actor |", "|---|---|---|---|---|---|---|---|",
        f"| {r['questions']} | {r['recall@1']:.3f} | {r[f'recall@{k}']:.3f} | {r['recall@10']:.3f} | "
        f"{r['no_relevant']} | {r['build_s']:.1f} | {r['local_qps']:.0f} | {r['ray_qps']:.0f} |", "",
        "Build time covers chunking and embedding the corpus; queries/s covers encoding the questions and the "
        "top-10 search over all of them (one actor, batches of 256, actor start not timed).", "",
        f"## End-to-end F1 (held-out split, {args.questions} questions, greedy, official metric)", "",
        f"Retrieved = the top-{k} passages placed before the question. 95% bootstrap CIs over questions "
        "(1000 resamples, seed 0).", "",
        "| model | context | F1 [95% CI] | EM [95% CI] | mean prompt tokens | truncated | seconds |",
        "|---|---|---|---|---|---|---|"]
    for model, rows in e2e.items():
        for name, x in rows.items():
            lines.append(f"| {model} | {name} | {x['f1']:.3f} [{x['f1_ci'][0]:.3f}, {x['f1_ci'][1]:.3f}] | "
                         f"{x['em']:.3f} [{x['em_ci'][0]:.3f}, {x['em_ci'][1]:.3f}] | {x['prompt_tokens']:.0f} | "
                         f"{x['truncated']} | {x['seconds']:.0f} |")
    lines += ["", "## Reading the numbers", ""]
    for model, rows in e2e.items():
        g, rt, no = rows["gold"]["f1"], rows["retrieved"]["f1"], rows["none"]["f1"]
        share = (rt - no) / (g - no) if g > no else float("nan")
        longer = rows["retrieved"]["prompt_tokens"] / rows["gold"]["prompt_tokens"]
        lines.append(f"- {model}: retrieved context recovers {share:.0%} of the F1 that the gold context adds over "
                     f"no context ({no:.3f} -> {rt:.3f}, gold {g:.3f}), in prompts {longer:.1f}x as long as the gold "
                     "context's.")
    lines += [
        f"- The corpus has {r['chunks'] / r['docs']:.2f} chunks a paragraph (recall@{k} {r[f'recall@{k}']:.3f}) and "
        "includes the training paragraphs, so a retrieved passage of another paragraph can be text a fine-tuned "
        "model has seen.",
        "- In a job: `retrieval.enabled=true` (eval only) or also `retrieval.use_in=train_and_eval`. The index "
        "is built once per corpus under `<output_dir>/index/` and reloaded when its config and checksums match. "
        "`retrieval.rebuild=never` refuses a stale index instead of rebuilding it.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=200, help="held-out questions for end-to-end F1")
    ap.add_argument("--models", default=POLICY, help="comma-separated model specs (HF id, folder, embedded:...)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--chunk-tokens", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=1024)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "docs" / "retrieval.md"))
    args = ap.parse_args()
    examples, _ = load_examples("xquad:en", "en")
    tokenizer = load_tokenizer(resolve_model(POLICY))
    with tempfile.TemporaryDirectory() as tmp:
        r = index_and_recall(examples, tokenizer, Path(tmp) / "index", args.chunk_tokens, args.overlap, args.k)
    print({key: v for key, v in r.items() if key != "top"}, flush=True)
    _, eval_ = grouped_split(examples, lambda ex: ex.context, 0.1, 42, args.questions)
    e2e = {m: end_to_end(m, eval_, tokenizer, r["top"], args.max_prompt_tokens, args.max_new_tokens)
           for m in args.models.split(",")}
    text = report(r, e2e, args)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
