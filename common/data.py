"""Extractive-QA data: SQuAD/MLQA/XQuAD loaders, a leakage-free train/eval split, and prompt building.

Every source becomes a list of frozen `QAExample`s plus a stats dict, so a job can log how many rows it
dropped and why. Rows the data gets wrong (no question, no answer, empty answer text, no context) are
skipped and counted; files that are not SQuAD-shaped at all raise with the path and the expected shape.

Prompts follow the paper verbatim (`PROMPT_TEMPLATE`) inside the tokenizer's chat template. A prompt longer
than the budget loses the *tail of its context*, never the question or the template, because the question
is what the policy must answer and the template is what it was trained on.

`datasets` is imported only inside the functions that read the hub or arrow dumps, so this module imports
in milliseconds.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any

PROMPT_TEMPLATE = "Answer the question based on the context.\nContext: {context} Question: {question}"

SQUAD_SHAPE = '{"data": [{"paragraphs": [{"context": str, "qas": [{"id", "question", "answers": [{"text"}]}]}]}]}'
HUB_PREFIX = "hf:"
MLQA_HUB_NAME = "facebook/mlqa"
_SOURCE_FORMS = (
    "a SQuAD-format JSON file (*.json, e.g. MLQA/XQuAD), "
    "a `datasets.save_to_disk` directory (with dataset_info.json), "
    f"or '{HUB_PREFIX}{MLQA_HUB_NAME}:<config>:<split>'"
)
# Re-rendering converges in one or two rounds; the extra rounds only absorb BPE merges at the cut.
_MAX_FIT_ROUNDS = 8


@dataclass(frozen=True)
class QAExample:
    id: str
    context: str
    question: str
    answers: tuple[str, ...]  # every gold answer text, in source order; answers[0] is the SFT target
    lang: str


def _new_stats() -> dict[str, int]:
    return {"loaded": 0, "skipped_no_answer": 0, "skipped_malformed": 0}


def _make_example(
    qid: Any, context: Any, question: Any, answer_texts: Any, lang: str
) -> QAExample | str:
    """One validated example, or the stats key saying why the row is skipped."""
    if not isinstance(qid, str) or not qid:
        return "skipped_malformed"
    if not isinstance(context, str) or not context.strip():
        return "skipped_malformed"
    if not isinstance(question, str) or not question.strip():
        return "skipped_malformed"
    if not isinstance(answer_texts, list):
        return "skipped_malformed"  # answers absent or of the wrong type
    if not answer_texts:
        return "skipped_no_answer"  # also SQuAD v2 "is_impossible" rows
    texts = tuple(t for t in answer_texts if isinstance(t, str) and t.strip())
    if not texts:
        return "skipped_malformed"
    return QAExample(id=qid, context=context, question=question, answers=texts, lang=lang)


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit}")


def _squad_answer_texts(qa: Mapping[str, Any]) -> list[Any] | None:
    answers = qa.get("answers")
    if not isinstance(answers, list):
        return None
    return [a.get("text") if isinstance(a, Mapping) else None for a in answers]


def _squad_paragraphs(raw: Any, path: Path) -> Iterable[Mapping[str, Any]]:
    not_squad = f"{path} is not SQuAD v1.1-shaped JSON; expected {SQUAD_SHAPE}"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("data"), list):
        raise ValueError(f"{not_squad} (no top-level 'data' list)")
    for article in raw["data"]:
        if not isinstance(article, Mapping) or not isinstance(article.get("paragraphs"), list):
            raise ValueError(f"{not_squad} (an article has no 'paragraphs' list)")
        for paragraph in article["paragraphs"]:
            if not isinstance(paragraph, Mapping) or not isinstance(paragraph.get("qas"), list):
                raise ValueError(f"{not_squad} (a paragraph has no 'qas' list)")
            yield paragraph


def load_squad_json(
    path: str | Path, lang: str, limit: int | None = None
) -> tuple[list[QAExample], dict[str, int]]:
    """Read a SQuAD v1.1-format file (data -> paragraphs -> qas), keeping at most `limit` examples.

    Returns (examples, {"loaded", "skipped_no_answer", "skipped_malformed"}). Raises FileNotFoundError
    for a missing file, ValueError for JSON that is not SQuAD-shaped or in which every row is skipped.
    """
    _check_limit(limit)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"QA data file not found: {path}; set data.source=... (jobs/eval.py: --data) to a SQuAD-format JSON (MLQA/XQuAD), "
            f"e.g. shared/data/xquad/xquad.en.json"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected {SQUAD_SHAPE}") from err

    examples: list[QAExample] = []
    stats = _new_stats()
    for paragraph in _squad_paragraphs(raw, path):
        for qa in paragraph["qas"]:
            if limit is not None and len(examples) >= limit:
                break
            if not isinstance(qa, Mapping):
                stats["skipped_malformed"] += 1
                continue
            made = _make_example(
                qa.get("id"), paragraph.get("context"), qa.get("question"), _squad_answer_texts(qa), lang
            )
            if isinstance(made, str):
                stats[made] += 1
            else:
                examples.append(made)
    return _finish(examples, stats, str(path))


def _finish(
    examples: list[QAExample], stats: dict[str, int], source: str
) -> tuple[list[QAExample], dict[str, int]]:
    stats["loaded"] = len(examples)
    if not examples:
        raise ValueError(f"no usable QA rows in {source}: {stats}")
    return examples, stats


def load_hf_rows(
    rows: Iterable[Mapping[str, Any]], lang: str, limit: int | None = None, source: str = "HF rows"
) -> tuple[list[QAExample], dict[str, int]]:
    """Convert HF SQuAD-style rows ({"id", "context", "question", "answers": {"text": [...], ...}}).

    Same skipping and stats as `load_squad_json`; works on a `datasets.Dataset` or a list of dicts.
    """
    _check_limit(limit)
    examples: list[QAExample] = []
    stats = _new_stats()
    for row in rows:
        if limit is not None and len(examples) >= limit:
            break
        answers = row.get("answers")
        texts = answers.get("text") if isinstance(answers, Mapping) else None
        texts = list(texts) if isinstance(texts, Sequence) and not isinstance(texts, str) else None
        made = _make_example(row.get("id"), row.get("context"), row.get("question"), texts, lang)
        if isinstance(made, str):
            stats[made] += 1
        else:
            examples.append(made)
    return _finish(examples, stats, source)


def load_mlqa_hub(
    config_name: str = "mlqa.en.en", split: str = "validation", lang: str = "en", limit: int | None = None
) -> tuple[list[QAExample], dict[str, int]]:
    """Load MLQA from the Hugging Face hub (needs network; CI and dev machines have none)."""
    import datasets  # heavy: only here

    try:
        dataset = datasets.load_dataset(MLQA_HUB_NAME, config_name, split=split)
    except ConnectionError as err:  # datasets wraps DNS failures, timeouts and HF_HUB_OFFLINE in this
        raise RuntimeError(
            f"the Hugging Face hub is not reachable for {MLQA_HUB_NAME}:{config_name}:{split} ({err!r}); "
            f"pass a local SQuAD-format JSON instead (set data.source=..., e.g. the MLQA dev JSON under "
            f"shared/data/mlqa/)"
        ) from err
    return load_hf_rows(dataset, lang, limit=limit, source=f"{MLQA_HUB_NAME}:{config_name}:{split}")


SHARED_DATA_ENV = "RAYGRPO_SHARED_DATA"
_SHORTCUTS = {"mlqa-de": "mlqa/dev-context-de-question-de.reconstructed-from-hf-arrow.json"}


def shared_data_dir() -> Path:
    """$RAYGRPO_SHARED_DATA, else the shared/data folder beside the checkout (or the working dir)."""
    if os.environ.get(SHARED_DATA_ENV):
        return Path(os.environ[SHARED_DATA_ENV])
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        for parent in (base, *base.parents):
            if (parent / "shared" / "data").is_dir():
                return parent / "shared" / "data"
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def resolve_source(source: str) -> str:
    """'xquad:<lang>' and 'mlqa-de' name files in the shared data folder; anything else passes through."""
    if source.startswith("xquad:"):
        path = shared_data_dir() / "xquad" / f"xquad.{source.split(':', 1)[1]}.json"
    elif source in _SHORTCUTS:
        path = shared_data_dir() / _SHORTCUTS[source]
    else:
        return source
    if not path.is_file():
        raise FileNotFoundError(f"data source {source!r} means {path}, which does not exist; set "
                                f"${SHARED_DATA_ENV} to the shared/data folder or pass data.source=<file.json>")
    return str(path)


def load_examples(
    source: str, lang: str, limit: int | None = None
) -> tuple[list[QAExample], dict[str, int]]:
    """Dispatch on the form of `source`: 'xquad:<lang>', 'mlqa-de', *.json, a save_to_disk directory, or
    'hf:facebook/mlqa:<cfg>:<split>'."""
    source = resolve_source(source)
    if source.startswith(HUB_PREFIX):
        parts = source[len(HUB_PREFIX):].split(":")
        if len(parts) != 3 or parts[0] != MLQA_HUB_NAME:
            raise ValueError(f"bad hub source {source!r}; expected '{HUB_PREFIX}{MLQA_HUB_NAME}:<config>:<split>'")
        return load_mlqa_hub(parts[1], parts[2], lang=lang, limit=limit)
    path = Path(source)
    if path.suffix == ".json":
        return load_squad_json(path, lang, limit=limit)
    if path.is_dir() and (path / "dataset_info.json").is_file():
        import datasets  # heavy: only here

        dataset = datasets.load_from_disk(str(path))
        if not isinstance(dataset, datasets.Dataset):
            raise ValueError(f"{path} holds several splits {list(dataset)}; point data.source at one split's folder")
        return load_hf_rows(dataset, lang, limit=limit, source=str(path))
    raise ValueError(f"cannot tell what data source {source!r} is; pass {_SOURCE_FORMS}")


def train_eval_split(
    examples: Sequence[QAExample], eval_fraction: float = 0.1, seed: int = 42, eval_size: int | None = None
) -> tuple[list[QAExample], list[QAExample]]:
    """Split into (train, eval), keeping every question of one context on the same side.

    Deliberate deviation: the paper splits questions at random 90/10, which puts sibling questions of a
    training paragraph into eval; we group by context so eval contexts are unseen during training.
    Contexts are shuffled with `random.Random(seed)` and taken into eval until it holds the wanted number
    of questions (`eval_size` if given, else round(len * eval_fraction)); the last context is kept only
    if that lands nearer the target, so the eval size is approximate by less than one paragraph's questions.
    Grouping uses insertion-ordered dicts, never sets, so the result is identical across runs and
    PYTHONHASHSEED values. Both sides come back shuffled, so a prefix is a fair sample.
    """
    groups: dict[str, list[QAExample]] = {}
    for ex in examples:
        groups.setdefault(ex.context, []).append(ex)
    if len(groups) < 2:
        raise ValueError(f"need at least 2 distinct contexts to split, got {len(groups)}; load more data")
    if eval_size is None:
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        target = max(1, round(len(examples) * eval_fraction))
    elif 1 <= eval_size < len(examples):
        target = eval_size
    else:
        raise ValueError(f"eval_size must be in [1, {len(examples) - 1}], got {eval_size}")

    rng = random.Random(seed)
    order = list(groups.values())
    rng.shuffle(order)
    n_eval_groups, n_eval = 0, 0
    while n_eval < target and n_eval_groups < len(order) - 1:  # always leave train one context
        n_eval += len(order[n_eval_groups])
        n_eval_groups += 1
    last = len(order[n_eval_groups - 1])
    if n_eval_groups > 1 and (n_eval - target) > (target - (n_eval - last)):
        n_eval_groups -= 1
    eval_set = [ex for group in order[:n_eval_groups] for ex in group]
    train_set = [ex for group in order[n_eval_groups:] for ex in group]
    rng.shuffle(train_set)
    rng.shuffle(eval_set)
    return train_set, eval_set


def split_examples(
    examples: Sequence[QAExample], eval_fraction: float = 0.1, seed: int = 42, eval_size: int | None = None,
    test_size: int | None = None,
) -> tuple[list[QAExample], list[QAExample], list[QAExample]]:
    """(train, eval, test), all grouped by context. The test split (if `test_size`) is cut first and is
    only for final reports (jobs/eval.py): never trained on, never used to pick the best checkpoint,
    which the eval split does. Without `test_size`, (train, eval) equal `train_eval_split` and test is [].
    """
    test: list[QAExample] = []
    rest = list(examples)
    if test_size is not None:
        rest, test = train_eval_split(examples, eval_fraction, seed, test_size)
    train, eval_ = train_eval_split(rest, eval_fraction, seed, eval_size)
    return train, eval_, test


def _render(tokenizer: Any, question: str, context: str, template: str, system_prompt: str | None) -> str:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    messages.append({"role": "user", "content": template.format(context=context, question=question)})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if not isinstance(text, str):  # transformers 5.x returns str for one conversation with tokenize=False
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, expected str")
    return text


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The chat template already wrote every special token as text; adding more would double a BOS.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_prompt_ids(
    tokenizer: Any,
    example: QAExample,
    max_prompt_tokens: int,
    template: str = PROMPT_TEMPLATE,
    system_prompt: str | None = None,
    context_override: str | None = None,
) -> tuple[list[int], bool]:
    """Token ids of the chat-formatted prompt, and whether the context was truncated to fit.

    Over budget, the context keeps its beginning and loses its tail, token by token; the question and
    template stay whole. `context_override` replaces the example's context (e.g. retrieved chunks).
    Raises ValueError when even an empty context does not fit in `max_prompt_tokens`.
    """
    context = example.context if context_override is None else context_override
    ids = _encode(tokenizer, _render(tokenizer, example.question, context, template, system_prompt))
    if len(ids) <= max_prompt_tokens:
        return ids, False

    overhead = len(_encode(tokenizer, _render(tokenizer, example.question, "", template, system_prompt)))
    if overhead > max_prompt_tokens:
        raise ValueError(
            f"max_prompt_tokens={max_prompt_tokens} is too small: the prompt without any context needs "
            f"{overhead} tokens (question {example.id!r}); raise max_prompt_tokens to at least {overhead}"
        )
    context_ids = _encode(tokenizer, context)
    budget = max_prompt_tokens - overhead
    for _ in range(_MAX_FIT_ROUNDS):
        # A cut inside a multi-byte character decodes to U+FFFD; drop it rather than feed it to the model.
        kept = tokenizer.decode(context_ids[:budget], clean_up_tokenization_spaces=False).rstrip("\ufffd")
        ids = _encode(tokenizer, _render(tokenizer, example.question, kept, template, system_prompt))
        if len(ids) <= max_prompt_tokens:
            return ids, True
        budget = max(0, budget - (len(ids) - max_prompt_tokens))
    raise RuntimeError(
        f"could not fit question {example.id!r} into {max_prompt_tokens} tokens after {_MAX_FIT_ROUNDS} rounds"
    )


def build_prompts(
    tokenizer: Any,
    examples: Sequence[QAExample],
    max_prompt_tokens: int,
    template: str = PROMPT_TEMPLATE,
    system_prompt: str | None = None,
) -> tuple[list[list[int]], dict[str, float]]:
    """`build_prompt_ids` over many examples.

    Returns (prompt_ids, {"prompts", "truncated", "mean_prompt_tokens", "max_prompt_tokens"}).
    """
    if not examples:
        raise ValueError("build_prompts got no examples")
    prompt_ids: list[list[int]] = []
    truncated = 0
    for ex in examples:
        ids, cut = build_prompt_ids(tokenizer, ex, max_prompt_tokens, template, system_prompt)
        prompt_ids.append(ids)
        truncated += cut
    lengths = [len(ids) for ids in prompt_ids]
    stats = {
        "prompts": len(prompt_ids),
        "truncated": truncated,
        "mean_prompt_tokens": sum(lengths) / len(lengths),
        "max_prompt_tokens": max(lengths),
    }
    return prompt_ids, stats


def sft_target(example: QAExample) -> str:
    """The SFT completion: the first gold answer (the only one in MLQA dev and XQuAD)."""
    return example.answers[0]
