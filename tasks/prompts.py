"""Your own prompts (`task.name: prompts`): rows of a JSONL, JSON, Parquet or CSV file, or an HF dataset, scored by
your reward functions. docs/your_task.md walks the whole path.

A row holds its prompt in a text column (`prompt_field`, default `prompt`) or as chat messages, a list of
{role, content}: that column itself (TRL's conversational form) or `messages_field` (default `messages`). Chat
prompts are rendered with the policy's chat template (a system prompt, `system_prompt`, goes first where the row
has none); a chat row that ends with an assistant message keeps it as the row's reference answer. Every other column
is passed to the reward functions as a keyword field (rewards/user.py), the prompt as `prompts`. `answer_field`
names a column of reference answers: the SFT target, and `reference` for the registry's verifiers (`gsm8k`,
`similarity`).

Rows that cannot be a prompt (not an object, no prompt, a prompt that is not text or messages, an empty one, a
missing answer where `answer_field` is set, a prompt over rollout.max_prompt_tokens) are skipped and counted in the
run log; a file with no usable row is an error naming the file and its first row. Splits as the built-in tasks:
data.eval_size / test_size / split_seed cut the rows (identical prompts stay on one side), or `eval_source` is a
second file of held-out rows. Eval scores the greedy answers with the job's rewards; the primary metric is their
mean total (`reward`) or a component or part (`primary: accuracy`, `primary: score/format`).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from common.data import encode_prompt, grouped_split, read_rows, render_prompt, three_way_split, uses_chat_template
from tasks.base import Task

ROLES = ("system", "user", "assistant", "tool")
REASONS = {"not_an_object": "not a JSON object", "bad_json": "not JSON", "missing_prompt": "no prompt column",
           "bad_prompt": "a prompt that is neither text nor a list of {role, content} messages",
           "empty_prompt": "an empty prompt", "missing_answer": "no answer in answer_field",
           "prompt_too_long": "a prompt over rollout.max_prompt_tokens"}


@dataclass(frozen=True)
class PromptsParams:
    prompt_field: str = "prompt"          # the text column (or a column of chat messages)
    messages_field: str = "messages"      # a column of chat messages, read where prompt_field is absent
    system_prompt: str | None = None      # first message of every chat (where a row has no system message)
    answer_field: str | None = None       # reference answers: SFT target and the verifiers' `reference`
    eval_source: str | None = None        # a file (or hf:) of held-out rows; None = cut from data.source
    primary: str = "reward"               # eval metric of the best checkpoint: reward, <component>[/<part>]


@dataclass(frozen=True)
class PromptRow:
    id: str                               # "<source>:<line or row>"
    prompt: str | tuple                   # the text, or the chat messages (dicts)
    answer: str | None
    fields: dict = field(default_factory=dict, hash=False)  # every other column, as the file has it

    @property
    def is_chat(self) -> bool:
        return not isinstance(self.prompt, str)


def _messages(value: Any) -> tuple | None:
    """A list of {role, content} messages as a tuple of plain dicts, else None."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(m, dict) for m in value):
        return None
    if not all(m.get("role") in ROLES and isinstance(m.get("content"), str) for m in value):
        return None
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def parse_row(where: str, row: Any, p: PromptsParams) -> PromptRow | str:
    """The row as a prompt, or the reason (a key of REASONS) it cannot be one."""
    if isinstance(row, ValueError):
        return "bad_json"
    if not isinstance(row, dict):
        return "not_an_object"
    key = p.prompt_field if p.prompt_field in row else p.messages_field if p.messages_field in row else None
    if key is None or row[key] is None:
        return "missing_prompt"
    value, answer = row[key], None
    if isinstance(value, str):
        prompt: str | tuple = value
        if not value.strip():
            return "empty_prompt"
    else:
        msgs = _messages(value)
        if msgs is None:
            return "bad_prompt"
        if msgs and msgs[-1]["role"] == "assistant":  # the chat's own answer: the reference, not the prompt
            msgs, answer = msgs[:-1], msgs[-1]["content"]
        if not any(m["role"] == "user" and m["content"].strip() for m in msgs):
            return "empty_prompt"
        prompt = msgs
    if p.answer_field is not None:
        raw = row.get(p.answer_field)
        if raw is None or isinstance(raw, (dict, list)) or not str(raw).strip():
            return "missing_answer"
        answer = str(raw)
    fields = {k: v for k, v in row.items() if k not in (p.prompt_field, p.messages_field)}
    return PromptRow(where, prompt, answer, fields)


def _columns(rows: list[tuple[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for _, r in rows[:1000] if isinstance(r, dict) for k in r))


class Skipped(Counter):
    """Rows skipped, by reason, and where each was ('line 3' of a JSONL, 'row 3' otherwise)."""

    def __init__(self):
        super().__init__()
        self.where: dict[str, list[str]] = {}

    def add(self, reason: str, where: str) -> None:
        self[reason] += 1
        self.where.setdefault(reason, []).append(where)

    def describe(self, shown: int = 5) -> str:
        """'2 with not JSON (line 3, line 7), 1 with an empty prompt (line 9)'."""
        def places(ws: list[str]) -> str:
            return ", ".join(ws[:shown]) + (f", and {len(ws) - shown} more" if len(ws) > shown else "")

        return ", ".join(f"{n} with {REASONS[k]} ({places(self.where.get(k, []))})" for k, n in self.items())


def read_prompts(source: str, p: PromptsParams, limit: int | None = None) -> tuple[list[PromptRow], Skipped]:
    """The usable rows of `source` and the skipped ones by reason (with where they are); ValueError naming the file,
    its columns and its first row where no row is usable."""
    rows = read_rows(source)
    rows = rows[:limit] if limit else rows
    good, skipped, first = [], Skipped(), {}
    for where, row in rows:
        got = parse_row(f"{source}:{where.split()[-1]}", row, p)
        if isinstance(got, str):
            skipped.add(got, where)
            first.setdefault(got, where)
        else:
            good.append(got)
    if good:
        return good, skipped
    columns = _columns(rows)
    if not rows:
        raise ValueError(f"data file {source}: it holds no rows")
    if skipped["missing_prompt"] == len(rows):
        raise ValueError(f"data file {source}: no row has a prompt column {p.prompt_field!r} (or {p.messages_field!r});"
                         f" its columns are {', '.join(columns) or '(none)'}: set task.params.prompt_field to the "
                         "column that holds the prompt")
    if p.answer_field is not None and skipped["missing_answer"] and p.answer_field not in columns:
        raise ValueError(f"data file {source}: task.params.answer_field {p.answer_field!r} is not a column (columns: "
                         f"{', '.join(columns)}); set it to the column of reference answers, or drop it")
    reason, where = next(iter(first.items()))
    raise ValueError(f"data file {source}: no usable row of {len(rows)} (skipped: "
                     f"{', '.join(f'{n} {REASONS[k]}' for k, n in skipped.items())}); the first, {where}, has "
                     f"{REASONS[reason]}. Each row needs a non-empty text in {p.prompt_field!r} or a list of "
                     f"{{role, content}} messages in {p.messages_field!r}")


def prompt_key(row: PromptRow) -> str:
    """Rows with one prompt are one group for splitting (no prompt on two sides)."""
    return row.prompt if isinstance(row.prompt, str) else json.dumps(row.prompt, sort_keys=True)


class PromptsTask(Task):
    name = "prompts"
    primary_metric = "reward"                 # the instance's is params.primary
    reward_fields = frozenset({"prompt"})     # and the data's columns: `fields()`
    fields_from_data = True
    default_rewards = None                    # rewards.components names them
    Params = PromptsParams

    @classmethod
    def load(cls, source, data, params):
        if not source:
            raise ValueError("task prompts reads your rows: set data.source to a JSONL / JSON / Parquet / CSV file "
                             "or hf:<dataset>:<split>")
        rows, skipped = read_prompts(source, params, data.limit)
        stats: dict[str, Any] = {"rows": len(rows) + sum(skipped.values()), "rows_used": len(rows),
                                 **{f"skipped_{k}": n for k, n in skipped.items()}}
        notes = [f"{source}: {stats['rows_used']} of {stats['rows']} rows used; skipped {skipped.describe()}"] \
            if skipped else []
        if params.eval_source:
            held, skipped_eval = read_prompts(params.eval_source, params)
            stats.update({"eval_rows": len(held), **{f"eval_skipped_{k}": n for k, n in skipped_eval.items()}})
            if skipped_eval:
                notes.append(f"{params.eval_source}: {len(held)} of {len(held) + sum(skipped_eval.values())} rows "
                             f"used; skipped {skipped_eval.describe()}")
            train, test = grouped_split(rows, prompt_key, seed=data.split_seed, eval_size=data.test_size) \
                if data.test_size else (rows, [])
            splits = {"train": train, "eval": held, **({"test": test} if test else {})}
        else:
            held_out = (data.eval_size or 0) + (data.test_size or 0)
            if held_out >= len(rows):
                raise ValueError(f"data file {source}: data.eval_size={data.eval_size}"
                                 + (f" + data.test_size={data.test_size}" if data.test_size else "")
                                 + f" rows held out leave none of its {len(rows)} usable rows to train on; set "
                                 f"data.eval_size (e.g. {max(1, len(rows) // 5)}) or give task.params.eval_source")
            train, eval_, test = three_way_split(rows, prompt_key, data.eval_fraction, data.split_seed, data.eval_size,
                                                 data.test_size)
            splits = {"train": train, "eval": eval_, **({"test": test} if test else {})}
        if notes:
            stats["notes"] = notes
        return splits, stats

    def __init__(self, splits, params, tokenizer, max_prompt_tokens, seed=0, stats=None, contexts=None, rewards=()):
        kept, dropped = {}, {}
        for name, rows in splits.items():  # a user's prompt is never cut: one over the budget is skipped
            kept[name] = [r for r in rows if len(self._ids(tokenizer, params, r)) <= max_prompt_tokens]
            dropped[name] = len(rows) - len(kept[name])
        stats = dict(stats or {})
        if any(dropped.values()):
            stats.update({f"prompt_too_long_{k}": n for k, n in dropped.items() if n})
            stats["notes"] = [*stats.get("notes", []), "skipped prompts over rollout.max_prompt_tokens="
                              f"{max_prompt_tokens}: " + ", ".join(f"{n} of {k}" for k, n in dropped.items() if n)]
            empty = [k for k in ("train", "eval") if not kept.get(k)]
            if empty:
                longest = max(len(self._ids(tokenizer, params, r)) for rows in splits.values() for r in rows)
                raise ValueError(f"task prompts: every {'/'.join(empty)} prompt is over rollout.max_prompt_tokens="
                                 f"{max_prompt_tokens} (the longest has {longest} tokens); raise it (with "
                                 "rollout.max_model_len)")
        super().__init__(kept, params, tokenizer, max_prompt_tokens, seed, stats, contexts, rewards)
        self.primary_metric = params.primary
        self._scorer = None

    @staticmethod
    def _ids(tokenizer, p: PromptsParams, row: PromptRow) -> list[int]:
        if not row.is_chat:
            return encode_prompt(tokenizer, render_prompt(tokenizer, row.prompt, p.system_prompt))
        msgs = list(row.prompt)
        if p.system_prompt is not None and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": p.system_prompt})
        if not uses_chat_template(tokenizer):  # a base model: the messages' texts, one paragraph each
            return encode_prompt(tokenizer, "\n\n".join(m["content"] for m in msgs))
        return encode_prompt(tokenizer, tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))

    def prompt_ids(self, example: PromptRow) -> tuple[list[int], bool]:
        return self._ids(self.tokenizer, self.params, example), False

    def content(self, example: PromptRow, cut: str | None = None) -> str:
        if not example.is_chat:
            return example.prompt
        return next(m["content"] for m in reversed(example.prompt) if m["role"] == "user")

    def fields(self) -> frozenset[str]:
        rows = [r for split in self.splits.values() for r in split]
        return frozenset({"prompt", *(k for r in rows for k in r.fields),
                          *(["reference"] if any(r.answer is not None for r in rows) else [])})

    def reward_inputs(self, example: PromptRow) -> dict:
        prompt = [dict(m) for m in example.prompt] if example.is_chat else example.prompt
        ref = {"reference": example.answer} if example.answer is not None and "reference" not in example.fields else {}
        return {"prompt": prompt, **example.fields, **ref}

    def sft_target(self, example: PromptRow) -> str:
        if example.answer is None:
            raise ValueError("task prompts: an sft phase trains toward reference answers; set task.params.answer_field "
                             "to their column (or give chat rows that end with the assistant's answer)")
        return example.answer

    def metrics(self, texts: list[str], examples: Sequence[PromptRow]) -> dict[str, list]:
        """The job's rewards on one answer per row: `reward` (the total), each component and its parts; None where
        a sample got no reward (means skip it)."""
        from rewards.registry import RewardScorer

        if self._scorer is None:
            self._scorer = RewardScorer(list(self.rewards))
        # the answers' ids as TRL's `completion_ids` (the tokens of the text; an engine's sampled ids decode to it)
        ids = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        totals, comps = self._scorer.score(list(texts), [len(x) for x in ids],
                                           [self.reward_inputs(ex) for ex in examples], ids, {"phase": "eval"})
        texts_logged = {k for k, v in comps.items() if any(isinstance(x, str) for x in v)}  # log_extra's text columns
        out = {"reward": totals, **{k: v for k, v in comps.items() if k not in texts_logged}}
        if self.primary_metric not in out:
            raise ValueError(f"task.params.primary {self.primary_metric!r} is not among the eval metrics "
                             f"({', '.join(out)}); name one of them")
        return out
