"""SQuAD-format extractive QA data (MLQA, XQuAD): loaders into frozen `QAExample`s, with counted skips, and the
sentence of a context that holds an answer (`reference_sentence`).

Every source becomes a list of `QAExample`s plus a stats dict, so a job can log how many rows it dropped
and why. Rows the data gets wrong (no question, no answer, empty answer text, no context) are skipped and
counted; files that are not SQuAD-shaped at all raise with the path and the expected shape.

`datasets` is imported only inside the functions that read the hub or arrow dumps, so this module imports
in milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.data import shared_file
from rewards.sentences import containing_sentence

SQUAD_SHAPE = '{"data": [{"paragraphs": [{"context": str, "qas": [{"id", "question", "answers": [{"text"}]}]}]}]}'
HUB_PREFIX = "hf:"
MLQA_HUB_NAME = "facebook/mlqa"
_SOURCE_FORMS = (
    "a SQuAD-format JSON file (*.json, e.g. MLQA/XQuAD), "
    "a `datasets.save_to_disk` directory (with dataset_info.json), "
    f"or '{HUB_PREFIX}{MLQA_HUB_NAME}:<config>:<split>'"
)


@dataclass(frozen=True)
class QAExample:
    id: str
    context: str
    question: str
    answers: tuple[str, ...]  # every gold answer text, in source order; answers[0] is the SFT target
    lang: str
    answer_starts: tuple[int, ...] = ()  # character offsets of the answers in the context, where the data has them


def reference_sentence(ex: QAExample) -> str:
    """The sentence of the context that holds the first gold span (located by its offset where the data has
    one, else by its first occurrence): domain QA's reference answer, QNLI's entailed sentence."""
    answer = ex.answers[0]
    start = ex.answer_starts[0] if ex.answer_starts else ex.context.find(answer)
    if start < 0:
        return answer  # the gold span is not in the context (bad data): the span itself is the reference
    return containing_sentence(ex.context, start, len(answer)) or answer


def _new_stats() -> dict[str, int]:
    return {"loaded": 0, "skipped_no_answer": 0, "skipped_malformed": 0}


def _make_example(
    qid: Any, context: Any, question: Any, answer_texts: Any, lang: str, answer_starts: Any = None
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
    keep = [i for i, t in enumerate(answer_texts) if isinstance(t, str) and t.strip()]
    if not keep:
        return "skipped_malformed"
    texts = tuple(answer_texts[i] for i in keep)
    starts: tuple[int, ...] = ()
    if isinstance(answer_starts, Sequence) and len(answer_starts) == len(answer_texts):
        cand = tuple(answer_starts[i] for i in keep)
        # Offsets are kept only where every one points at its answer text; otherwise none are.
        if all(isinstance(s, int) and context[s:s + len(t)] == t for s, t in zip(cand, texts)):
            starts = cand
    return QAExample(id=qid, context=context, question=question, answers=texts, lang=lang, answer_starts=starts)


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit}")


def _squad_answer_texts(qa: Mapping[str, Any]) -> list[Any] | None:
    answers = qa.get("answers")
    if not isinstance(answers, list):
        return None
    return [a.get("text") if isinstance(a, Mapping) else None for a in answers]


def _squad_answer_starts(qa: Mapping[str, Any]) -> list[Any] | None:
    answers = qa.get("answers")
    if not isinstance(answers, list):
        return None
    return [a.get("answer_start") if isinstance(a, Mapping) else None for a in answers]


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
                qa.get("id"), paragraph.get("context"), qa.get("question"), _squad_answer_texts(qa), lang,
                _squad_answer_starts(qa),
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
        starts = answers.get("answer_start") if isinstance(answers, Mapping) else None
        starts = list(starts) if isinstance(starts, Sequence) and not isinstance(starts, str) else None
        made = _make_example(row.get("id"), row.get("context"), row.get("question"), texts, lang, starts)
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


SHORTCUTS = {"mlqa-de": "mlqa/dev-context-de-question-de.reconstructed-from-hf-arrow.json"}
# The first questions of a source that ship with the project (jobs/data/XQUAD.md, CC BY-SA 4.0), in file order: a run
# asking for no more of them (data.limit) reads them where the shared data folder is missing (a fresh clone)
BUNDLED = {"xquad:en": ("xquad.en.first200.json", 200)}
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "jobs" / "data"


def resolve_source(source: str, limit: int | None = None) -> str:
    """'xquad:<lang>' and 'mlqa-de' name files in the shared data folder; anything else passes through. Where the
    shared file is missing and the project ships the first `limit` questions of the source, their file."""
    if source.startswith("xquad:"):
        relative = f"xquad/xquad.{source.split(':', 1)[1]}.json"
    elif source in SHORTCUTS:
        relative = SHORTCUTS[source]
    else:
        return source
    try:
        return str(shared_file(relative, source))
    except FileNotFoundError as err:
        bundled = bundled_file(source, limit)
        if bundled is not None:
            return str(bundled)
        if source in BUNDLED:
            name, n = BUNDLED[source]
            raise FileNotFoundError(f"{err}; a run of at most {n} questions (data.limit) reads the first {n}, which "
                                    f"ship in {BUNDLED_DIR / name}") from None
        raise


def bundled_file(source: str, limit: int | None) -> Path | None:
    """The shipped file of `source`'s first questions, where it holds the `limit` a run asks for."""
    if source not in BUNDLED or limit is None or limit > BUNDLED[source][1]:
        return None
    path = BUNDLED_DIR / BUNDLED[source][0]
    return path if path.is_file() else None


def source_lang(source: str) -> str:
    """The metric language a source implies: 'xquad:de' -> 'de', 'mlqa-de' -> 'de', anything else -> 'en'."""
    from rewards.qa import MLQA_LANGS

    tail = source.split(":")[-1] if source.startswith("xquad:") else source.removeprefix("mlqa-")
    return tail if tail in MLQA_LANGS else "en"


def load_examples(
    source: str, lang: str, limit: int | None = None
) -> tuple[list[QAExample], dict[str, int]]:
    """Dispatch on the form of `source`: 'xquad:<lang>', 'mlqa-de', *.json, a save_to_disk directory, or
    'hf:facebook/mlqa:<cfg>:<split>'."""
    asked, source = source, resolve_source(source, limit)
    if Path(source).parent == BUNDLED_DIR and asked in BUNDLED:
        examples, stats = load_squad_json(Path(source), lang, limit=limit)
        return examples, {**stats, "notes": [f"data source {asked!r}: the shared data folder is not here, so its first "
                                             f"{limit} questions come from the copy shipped in {source} (CC BY-SA 4.0, "
                                             "jobs/data/XQUAD.md), the same questions the full file starts with"]}
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
