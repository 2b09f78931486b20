"""Data plumbing every task shares: where the shared data lives, leakage-free grouped splits, and prompts
rendered through the tokenizer's chat template that fit a token budget.

What a row of a dataset means (SQuAD, GSM8K, Countdown, ...) is each task's business (tasks/); nothing here
knows a format. A prompt longer than the budget loses the tail of its *cuttable* part (a QA context), never
the instruction or the question, because the question is what the policy must answer and the template is
what it was trained on.
"""
from __future__ import annotations

import os
import random
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
SHARED_DATA_ENV = "RAYGRPO_SHARED_DATA"
# Re-rendering converges in one or two rounds; the extra rounds only absorb BPE merges at the cut.
_MAX_FIT_ROUNDS = 8


def shared_data_dir() -> Path:
    """$RAYGRPO_SHARED_DATA, else the shared/data folder beside the checkout (or the working dir)."""
    if os.environ.get(SHARED_DATA_ENV):
        return Path(os.environ[SHARED_DATA_ENV])
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        for parent in (base, *base.parents):
            if (parent / "shared" / "data").is_dir():
                return parent / "shared" / "data"
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(relative: str, name: str) -> Path:
    """A file of the shared data folder, or FileNotFoundError saying how to point at it."""
    path = shared_data_dir() / relative
    if not path.is_file():
        raise FileNotFoundError(f"data source {name!r} means {path}, which does not exist; set "
                                f"${SHARED_DATA_ENV} to the shared/data folder or pass data.source=<file>")
    return path


# ---- splits -----------------------------------------------------------------------------------------------

def grouped_split(items: Sequence[T], key: Callable[[T], Hashable], eval_fraction: float = 0.1, seed: int = 42,
                  eval_size: int | None = None) -> tuple[list[T], list[T]]:
    """Split into (train, eval), keeping every item of one group (same `key`, e.g. one QA context or one
    arithmetic question) on the same side, so eval groups are unseen during training.

    Groups are shuffled with `random.Random(seed)` and taken into eval until it holds the wanted number of
    items (`eval_size` if given, else round(len * eval_fraction)); the last group is kept only if that lands
    nearer the target, so the eval size is approximate by less than one group. Grouping uses
    insertion-ordered dicts, never sets, so the result is identical across runs and PYTHONHASHSEED values.
    Both sides come back shuffled, so a prefix is a fair sample.
    """
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    if len(groups) < 2:
        raise ValueError(f"need at least 2 distinct groups to split, got {len(groups)}; load more data")
    if eval_size is None:
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        target = max(1, round(len(items) * eval_fraction))
    elif 1 <= eval_size < len(items):
        target = eval_size
    else:
        raise ValueError(f"eval_size must be in [1, {len(items) - 1}], got {eval_size}")

    rng = random.Random(seed)
    order = list(groups.values())
    rng.shuffle(order)
    n_eval_groups, n_eval = 0, 0
    while n_eval < target and n_eval_groups < len(order) - 1:  # always leave train one group
        n_eval += len(order[n_eval_groups])
        n_eval_groups += 1
    last = len(order[n_eval_groups - 1])
    if n_eval_groups > 1 and (n_eval - target) > (target - (n_eval - last)):
        n_eval_groups -= 1
    eval_set = [x for group in order[:n_eval_groups] for x in group]
    train_set = [x for group in order[n_eval_groups:] for x in group]
    rng.shuffle(train_set)
    rng.shuffle(eval_set)
    return train_set, eval_set


def three_way_split(items: Sequence[T], key: Callable[[T], Hashable], eval_fraction: float = 0.1,
                    seed: int = 42, eval_size: int | None = None, test_size: int | None = None,
                    ) -> tuple[list[T], list[T], list[T]]:
    """(train, eval, test), all grouped by `key`. The test split (if `test_size`) is cut first and is only for
    final reports (jobs/eval.py): never trained on, never used to pick the best checkpoint, which the eval
    split does. Without `test_size`, (train, eval) equal `grouped_split` and test is [].
    """
    test: list[T] = []
    rest = list(items)
    if test_size is not None:
        rest, test = grouped_split(items, key, eval_fraction, seed, test_size)
    train, eval_ = grouped_split(rest, key, eval_fraction, seed, eval_size)
    return train, eval_, test


# ---- prompts ----------------------------------------------------------------------------------------------

def uses_chat_template(tokenizer: Any) -> bool:
    """Chat models get their template; a tokenizer without one (flan-t5, base LMs) gets the plain text."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: Any, user_content: str, system_prompt: str | None = None) -> str:
    """The prompt text: the chat template with a generation prompt, or the plain user content."""
    if not uses_chat_template(tokenizer):
        return user_content if system_prompt is None else f"{system_prompt}\n\n{user_content}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    messages.append({"role": "user", "content": user_content})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if not isinstance(text, str):  # transformers 5.x returns str for one conversation with tokenize=False
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, expected str")
    return text


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    # The chat template already wrote every special token as text; adding more would double a BOS. Plain
    # prompts get the tokenizer's own specials (T5's encoder input ends in </s>).
    return list(tokenizer(text, add_special_tokens=not uses_chat_template(tokenizer))["input_ids"])


def fit_prompt(tokenizer: Any, content: Callable[[str], str], cuttable: str, max_prompt_tokens: int,
               system_prompt: str | None = None, label: str = "") -> tuple[list[int], bool]:
    """Token ids of the prompt `content(cuttable)`, and whether `cuttable` was cut to fit.

    Over budget, `cuttable` keeps its beginning and loses its tail, token by token; the rest of the content
    stays whole. Raises ValueError naming the fix when even an empty `cuttable` does not fit.
    """
    ids = encode_prompt(tokenizer, render_prompt(tokenizer, content(cuttable), system_prompt))
    if len(ids) <= max_prompt_tokens:
        return ids, False

    overhead = len(encode_prompt(tokenizer, render_prompt(tokenizer, content(""), system_prompt)))
    if overhead > max_prompt_tokens:
        raise ValueError(
            f"rollout.max_prompt_tokens={max_prompt_tokens} is too small: the prompt of {label or 'an example'} "
            f"needs {overhead} tokens without its cuttable part; raise max_prompt_tokens to at least {overhead}")
    cut_ids = list(tokenizer(cuttable, add_special_tokens=False)["input_ids"])
    budget = max_prompt_tokens - overhead
    for _ in range(_MAX_FIT_ROUNDS):
        # A cut inside a multi-byte character decodes to U+FFFD; drop it rather than feed it to the model.
        kept = tokenizer.decode(cut_ids[:budget], clean_up_tokenization_spaces=False).rstrip("\ufffd")
        ids = encode_prompt(tokenizer, render_prompt(tokenizer, content(kept), system_prompt))
        if len(ids) <= max_prompt_tokens:
            return ids, True
        budget = max(0, budget - (len(ids) - max_prompt_tokens))
    raise RuntimeError(f"could not fit {label or 'a prompt'} into {max_prompt_tokens} tokens after "
                       f"{_MAX_FIT_ROUNDS} rounds")


# ---- rows of a data file ----------------------------------------------------------------------------------

ROW_FORMATS = (".jsonl", ".json", ".parquet", ".csv")


def _hf_rows(spec: str) -> list[Any]:
    parts = spec[3:].split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"data {spec!r}: write hf:<dataset>:<split> or hf:<dataset>:<config>:<split>")
    import datasets

    try:
        rows = datasets.load_dataset(parts[0], *(parts[1:-1]), split=parts[-1])
    except Exception as err:  # no hub, no such dataset or split: the datasets library says which
        raise ValueError(f"data {spec!r}: could not load the hub dataset ({type(err).__name__}: {err}); without a "
                         "hub, give a file: JSONL, JSON, Parquet or CSV") from err
    return list(rows)


def _json_rows(path: Path) -> list[tuple[str, Any]]:
    import json

    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # JSON Lines under a .json name
        return _jsonl_rows(text)
    if isinstance(data, dict):  # {"data": [...]}: the one list it holds
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: a JSON object must hold exactly one list of rows (e.g. {{\"data\": [...]}}); "
                             f"it has keys {sorted(data)}")
        data = lists[0]
    if not isinstance(data, list):
        raise ValueError(f"{path}: JSON must be a list of rows (objects), not {type(data).__name__}")
    return [(f"row {i + 1}", row) for i, row in enumerate(data)]


def _jsonl_rows(text: str) -> list[tuple[str, Any]]:
    import json

    out = []
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            try:
                out.append((f"line {i + 1}", json.loads(line)))
            except json.JSONDecodeError as err:
                out.append((f"line {i + 1}", ValueError(f"not JSON ({err.msg})")))
    return out


def read_rows(source: str) -> list[tuple[str, Any]]:
    """[(where, row)] of a data source, in order: a JSONL, JSON (a list of objects, or an object holding one), Parquet
    or CSV file (by its extension), or 'hf:<dataset>[:<config>]:<split>'. `where` names the row for messages ('line
    3' of a JSONL, 'row 3' otherwise); a JSONL line that is not JSON comes as a ValueError in the row's place, for
    the caller to count. FileNotFoundError / ValueError naming the fix for a source that cannot be read at all."""
    if source.startswith("hf:"):
        return [(f"row {i + 1}", row) for i, row in enumerate(_hf_rows(source))]
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p.name for p in path.iterdir() if p.suffix.lower() in ROW_FORMATS)
        raise ValueError(f"data file {source!r} is a folder; give one file in it"
                         + (f" (it holds {', '.join(files[:8])}{', ...' if len(files) > 8 else ''})" if files else
                            f" (it holds no {'/'.join(ROW_FORMATS)} file)"))
    if not path.is_file():
        raise FileNotFoundError(f"data file {source!r} does not exist (looked at {path.resolve()}); give a path "
                                f"relative to where you run, or hf:<dataset>:<split>")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path.read_text(encoding="utf-8"))
    if suffix == ".json":
        return _json_rows(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return [(f"row {i + 1}", row) for i, row in enumerate(pq.read_table(path).to_pylist())]
    if suffix == ".csv":
        import csv

        with path.open(newline="", encoding="utf-8") as f:
            return [(f"row {i + 1}", dict(row)) for i, row in enumerate(csv.DictReader(f))]
    raise ValueError(f"data file {source!r}: unknown format {suffix or '(no extension)'}; use one of "
                     f"{', '.join(ROW_FORMATS)} or hf:<dataset>:<split>")


def preference_pairs(spec: str, tokenizer: Any, max_prompt_tokens: int, limit: int | None = None,
                     system_prompt: str | None = None) -> tuple[list[tuple[list[int], list[int], list[int]]], dict]:
    """(prompt ids, chosen ids, rejected ids) of a preference dataset, and what was skipped, by reason.

    `spec`: a file of {"prompt", "chosen", "rejected"} strings (JSONL, JSON, Parquet or CSV: `read_rows`), or
    "hf:<dataset>[:<config>]:<split>" with those columns. The prompt is the user message, rendered with the chat template; each completion's ids end in EOS.
    Rows that are not objects with three non-empty strings ('malformed'), whose chosen equals the rejected
    ('identical') or whose prompt is over max_prompt_tokens ('prompt_too_long') are skipped and counted; no usable
    row at all is an error naming the file and the counts.
    """
    if not spec.startswith("hf:") and not Path(spec).expanduser().is_file():
        raise FileNotFoundError(f"preference pairs {spec!r}: no such file; give a JSONL file of {{prompt, chosen, "
                                "rejected}} rows (or JSON, Parquet, CSV), hf:<dataset>:<split>, or pairs: online")
    rows = [None if isinstance(row, ValueError) else row for _, row in read_rows(spec)]
    eos = tokenizer.eos_token_id
    ids = lambda text: list(tokenizer.encode(text, add_special_tokens=False)) + [eos]  # noqa: E731
    out, skipped = [], {"malformed": 0, "identical": 0, "prompt_too_long": 0}
    for row in rows:
        if limit is not None and len(out) >= limit:
            break
        fields = [row.get(k) if isinstance(row, dict) else None for k in ("prompt", "chosen", "rejected")]
        if not all(isinstance(f, str) and f.strip() for f in fields):
            skipped["malformed"] += 1
            continue
        prompt, chosen, rejected = fields
        if chosen.strip() == rejected.strip():
            skipped["identical"] += 1
            continue
        prompt_ids = encode_prompt(tokenizer, render_prompt(tokenizer, prompt, system_prompt))
        if len(prompt_ids) > max_prompt_tokens:
            skipped["prompt_too_long"] += 1
            continue
        out.append((prompt_ids, ids(chosen), ids(rejected)))
    if not out:
        raise ValueError(f"preference pairs {spec!r}: no usable row of {len(rows)} (skipped: {skipped}); each row "
                         "needs non-empty prompt, chosen and rejected strings that differ, with the prompt within "
                         "rollout.max_prompt_tokens")
    return out, skipped
