"""Retrieval-augmented QA: replace the gold contexts of a QA task's questions by their top-k passages.

The dense index over every context of the task's data is built (or loaded, checksummed) once on the
driver; retrieval actors answer the queries; retrieval is deterministic, so it runs once per job.
"""
from __future__ import annotations

import time
from pathlib import Path

from common.config import JobConfig
from tasks.base import Task


def safe_name(source: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in Path(source).name or source)


def corpus(task: Task) -> list[str]:
    """Every distinct document of the task's splits, in order: the index's doc ids are positions in this list."""
    return list(dict.fromkeys(task.retrieval_document(ex) for split in task.splits.values() for ex in split))


def open_index(task: Task, cfg: JobConfig):
    """(the dense index over every context of the task's data, 'loaded' | 'built' | 'rebuilt', its folder, the
    number of documents): a valid saved index is loaded, else it is built and saved."""
    from retrieval.encoder import load_encoder
    from retrieval.index import load_or_build, tokenizer_id

    if not task.retrievable:
        raise ValueError(f"retrieval.enabled: task {task.name!r} has no contexts to retrieve (tasks/base.py "
                         "Task.retrievable); drop retrieval.enabled or use a QA task")
    r = cfg.retrieval
    docs = corpus(task)
    source = task.stats.get("source", cfg.data.source or "data")
    index_dir = Path(r.index_dir) if r.index_dir else Path(cfg.train.output_dir) / "index" / safe_name(source)
    index, status = load_or_build(index_dir, docs, task.tokenizer, load_encoder(r.encoder), r.chunk_tokens,
                                  r.overlap, tokenizer_name=tokenizer_id(task.tokenizer), rebuild=r.rebuild)
    return index, status, index_dir, len(docs)


def attach_retrieval(system, task: Task, cfg: JobConfig) -> tuple[Task, dict]:
    """(a task whose eval (and, with use_in=train_and_eval, train) contexts are retrieved passages, info)."""
    r, t = cfg.retrieval, time.perf_counter()
    index, status, index_dir, n_docs = open_index(task, cfg)
    system.start_retrieval(str(index_dir))
    targets = ["eval"] + (["train"] if r.use_in == "train_and_eval" else [])
    for name in targets:
        examples = task.splits[name]
        task = with_passages(task, name, system.retrieve([task.retrieval_query(ex) for ex in examples], r.k))
    return task, {"retrieval/index": str(index_dir), "retrieval/index_status": status,
                  "retrieval/chunks": len(index), "retrieval/docs": n_docs,
                  "retrieval/used_in": "+".join(targets), "retrieval/seconds": time.perf_counter() - t}


def with_passages(task: Task, split: str, hits: list[list[dict]]) -> Task:
    """`task` whose `split` examples have their retrieved passages (`hits`, one list per example) as context."""
    from retrieval.retriever import format_passages

    examples = task.splits[split]
    return task.with_split(split, [task.with_context(ex, format_passages(h)) for ex, h in zip(examples, hits,
                                                                                             strict=True)],
                           context="retrieved")
