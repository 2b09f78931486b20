"""The extractive-QA task of a job: data, prompts, batches by step, and greedy evaluation."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from common.config import JobConfig
from common.data import QAExample, build_prompts, load_examples, split_examples
from common.models import load_tokenizer, resolve_model
from rewards.qa import extract_answer, qa_scores


@dataclass(frozen=True)
class PromptBatch:
    indices: list[int]
    prompt_ids: list[list[int]]   # [P]
    examples: list[dict]          # [P] what reward functions read: {"answers": [...], "lang": ...}

    @property
    def golds(self) -> list[list[str]]:
        return [e["answers"] for e in self.examples]


REWARD_FIELDS = {"answers", "lang"}


def reward_fields(ex: QAExample) -> dict:
    """The fields of an example that reward functions read (REWARD_FIELDS)."""
    return {"answers": list(ex.answers), "lang": ex.lang}


class QATask:
    def __init__(self, tokenizer, train: list[QAExample], eval_: list[QAExample], max_prompt_tokens: int,
                 seed: int, policy_path: str, reference_path: str, stats: dict):
        self.tokenizer, self.train, self.eval = tokenizer, train, eval_
        self.train_prompts, tstats = build_prompts(tokenizer, train, max_prompt_tokens)
        self.eval_prompts, estats = build_prompts(tokenizer, eval_, max_prompt_tokens)
        self.seed, self.policy_path, self.reference_path = seed, policy_path, reference_path
        self.max_prompt_tokens = max_prompt_tokens
        self.train_context = self.eval_context = "gold"
        self.stats = {**stats, "train": len(train), "eval": len(eval_),
                      **{f"train_prompts_{k}": v for k, v in tstats.items()},
                      **{f"eval_prompts_{k}": v for k, v in estats.items()}}
        self._perms: dict[int, list[int]] = {}

    @classmethod
    def from_config(cls, cfg: JobConfig) -> "QATask":
        d = cfg.data
        examples, stats = load_examples(d.source, d.lang, limit=d.limit)
        train, eval_, test = split_examples(examples, d.eval_fraction, d.split_seed, d.eval_size, d.test_size)
        stats = {**stats, "test": len(test)}
        if not train or not eval_:
            raise ValueError(f"data.source {d.source!r} gave {len(train)} train / {len(eval_)} eval questions; "
                             "lower data.eval_size or raise data.limit")
        policy = resolve_model(cfg.model.policy, cfg.model.cache_dir)
        reference = resolve_model(cfg.model.reference, cfg.model.cache_dir) if cfg.model.reference else policy
        return cls(load_tokenizer(policy), train, eval_, cfg.rollout.max_prompt_tokens, cfg.train.seed,
                   policy, reference, stats)

    def use_contexts(self, eval_contexts: list[str] | None, train_contexts: list[str] | None) -> None:
        """Replace the gold contexts (e.g. by retrieved passages) and rebuild the affected prompts."""
        import dataclasses

        for name, contexts in (("eval", eval_contexts), ("train", train_contexts)):
            if contexts is None:
                continue
            examples = [dataclasses.replace(ex, context=c) for ex, c in zip(getattr(self, name), contexts, strict=True)]
            prompts, pstats = build_prompts(self.tokenizer, examples, self.max_prompt_tokens)
            setattr(self, name, examples)
            setattr(self, f"{name}_prompts", prompts)
            setattr(self, f"{name}_context", "retrieved")
            self.stats.update({f"{name}_prompts_{k}": v for k, v in pstats.items()})

    def _position(self, g: int) -> int:
        """The g-th training question drawn: a fresh seeded permutation every epoch, so the data
        position is a function of the step alone and resuming needs nothing but the step."""
        n = len(self.train)
        epoch = g // n
        if epoch not in self._perms:
            perm = list(range(n))
            random.Random(self.seed * 100_003 + epoch).shuffle(perm)
            self._perms[epoch] = perm
        return self._perms[epoch][g % n]

    def train_batch(self, step: int, prompts_per_step: int) -> PromptBatch:
        idx = [self._position((step - 1) * prompts_per_step + j) for j in range(prompts_per_step)]
        return PromptBatch(idx, [self.train_prompts[i] for i in idx], [reward_fields(self.train[i]) for i in idx])

    def sft_batch(self, s: int, batch_size: int, limit: int) -> tuple[list[list[int]], list[list[int]]]:
        idx = [((s * batch_size + j) % limit) for j in range(batch_size)]
        eos = self.tokenizer.eos_token_id
        targets = [self.tokenizer.encode(self.train[i].answers[0], add_special_tokens=False) + [eos] for i in idx]
        return [self.train_prompts[i] for i in idx], targets


def attach_retrieval(system, task: QATask, cfg: JobConfig, output_dir: Path) -> dict:
    """RAG: build (or load) the dense index over every context of the data source on the driver, start
    the retrieval actors, and replace the gold contexts of the eval (and, with use_in=train_and_eval,
    the training) questions by their top-k passages. Retrieval is deterministic, so it runs once."""
    import time

    from retrieval.chunking import unique_contexts
    from retrieval.encoder import load_encoder
    from retrieval.index import load_or_build
    from retrieval.retriever import format_passages

    r, t = cfg.retrieval, time.perf_counter()
    docs, _ = unique_contexts(task.train + task.eval)
    index_dir = Path(r.index_dir) if r.index_dir else output_dir / "index" / _safe_name(cfg.data.source)
    index, status = load_or_build(index_dir, docs, task.tokenizer, load_encoder(r.encoder), r.chunk_tokens,
                                  r.overlap, tokenizer_name=task.policy_path, rebuild=r.rebuild)
    system.start_retrieval(str(index_dir))
    targets = ["eval"] + (["train"] if r.use_in == "train_and_eval" else [])
    contexts = {}
    for name in targets:
        hits = system.retrieve([ex.question for ex in getattr(task, name)], r.k)
        contexts[name] = [format_passages(h) for h in hits]
    task.use_contexts(contexts.get("eval"), contexts.get("train"))
    return {"retrieval/index": str(index_dir), "retrieval/index_status": status, "retrieval/chunks": len(index),
            "retrieval/docs": len(docs), "retrieval/used_in": "+".join(targets),
            "retrieval/seconds": time.perf_counter() - t}


def _safe_name(source: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in Path(source).name or source)


def score_answers(texts: list[str], examples, lang: str, tokenizer) -> dict[str, list[float]]:
    """Per-question {"em", "f1", "len"} of one completion per question: the official metric for `lang` on the
    extracted answer, and the completion's length in tokens. The job's eval and jobs/eval.py both use it."""
    ems, f1s, lens = [], [], []
    for text, ex in zip(texts, examples, strict=True):
        em, f1 = qa_scores(extract_answer(text), list(ex.answers), lang)
        ems.append(em)
        f1s.append(f1)
        lens.append(len(tokenizer.encode(text, add_special_tokens=False)))
    return {"em": ems, "f1": f1s, "len": lens}


def evaluate(system, task: QATask, cfg: JobConfig) -> dict:
    """Greedy decoding on the held-out split; official F1/EM for the data language."""
    import time

    t = time.perf_counter()
    print(f"[eval] greedy answers for {len(task.eval_prompts)} held-out questions ...", flush=True)
    texts = system.greedy(task.eval_prompts, cfg.rollout.max_new_tokens)
    per = score_answers(texts, task.eval, cfg.data.lang, task.tokenizer)
    n = len(texts)
    seconds = time.perf_counter() - t
    return {"eval/f1": sum(per["f1"]) / n, "eval/em": sum(per["em"]) / n, "eval/len": sum(per["len"]) / n, "eval/n": n,
            "eval/context": task.eval_context,
            "eval/seconds": seconds, "eval/sample": texts[0][:200]}
