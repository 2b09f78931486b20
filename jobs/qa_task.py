"""The extractive-QA task of a job: data, prompts, batches by step, and greedy evaluation."""
from __future__ import annotations

import random
from dataclasses import dataclass

from common.config import JobConfig
from common.data import QAExample, build_prompts, load_examples, train_eval_split
from common.models import load_tokenizer, resolve_model
from rewards.qa import extract_answer, qa_scores


@dataclass(frozen=True)
class PromptBatch:
    indices: list[int]
    prompt_ids: list[list[int]]   # [P]
    golds: list[list[str]]        # [P]
    langs: list[str]              # [P]


class QATask:
    def __init__(self, tokenizer, train: list[QAExample], eval_: list[QAExample], max_prompt_tokens: int,
                 seed: int, policy_path: str, reference_path: str, stats: dict):
        self.tokenizer, self.train, self.eval = tokenizer, train, eval_
        self.train_prompts, tstats = build_prompts(tokenizer, train, max_prompt_tokens)
        self.eval_prompts, estats = build_prompts(tokenizer, eval_, max_prompt_tokens)
        self.seed, self.policy_path, self.reference_path = seed, policy_path, reference_path
        self.stats = {**stats, "train": len(train), "eval": len(eval_),
                      **{f"train_prompts_{k}": v for k, v in tstats.items()},
                      **{f"eval_prompts_{k}": v for k, v in estats.items()}}
        self._perms: dict[int, list[int]] = {}

    @classmethod
    def from_config(cls, cfg: JobConfig) -> "QATask":
        d = cfg.data
        examples, stats = load_examples(d.source, d.lang, limit=d.limit)
        train, eval_ = train_eval_split(examples, d.eval_fraction, d.split_seed, d.eval_size)
        if not train or not eval_:
            raise ValueError(f"data.source {d.source!r} gave {len(train)} train / {len(eval_)} eval questions; "
                             "lower data.eval_size or raise data.limit")
        policy = resolve_model(cfg.model.policy, cfg.model.cache_dir)
        reference = resolve_model(cfg.model.reference, cfg.model.cache_dir) if cfg.model.reference else policy
        return cls(load_tokenizer(policy), train, eval_, cfg.rollout.max_prompt_tokens, cfg.train.seed,
                   policy, reference, stats)

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
        return PromptBatch(idx, [self.train_prompts[i] for i in idx], [list(self.train[i].answers) for i in idx],
                           [self.train[i].lang for i in idx])

    def sft_batch(self, s: int, batch_size: int, limit: int) -> tuple[list[list[int]], list[list[int]]]:
        idx = [((s * batch_size + j) % limit) for j in range(batch_size)]
        eos = self.tokenizer.eos_token_id
        targets = [self.tokenizer.encode(self.train[i].answers[0], add_special_tokens=False) + [eos] for i in idx]
        return [self.train_prompts[i] for i in idx], targets


def evaluate(system, task: QATask, cfg: JobConfig) -> dict:
    """Greedy decoding on the held-out split; official F1/EM for the data language."""
    import time

    t = time.perf_counter()
    print(f"[eval] greedy answers for {len(task.eval_prompts)} held-out questions ...", flush=True)
    texts = system.greedy(task.eval_prompts, cfg.rollout.max_new_tokens)
    ems, f1s, lens = [], [], []
    for text, ex in zip(texts, task.eval):
        em, f1 = qa_scores(extract_answer(text), list(ex.answers), ex.lang)
        ems.append(em)
        f1s.append(f1)
        lens.append(len(task.tokenizer.encode(text, add_special_tokens=False)))
    n = len(texts)
    seconds = time.perf_counter() - t
    return {"eval/f1": sum(f1s) / n, "eval/em": sum(ems) / n, "eval/len": sum(lens) / n, "eval/n": n,
            "eval/seconds": seconds, "eval/sample": texts[0][:200]}
