"""GLUE-style label tasks (the NLU paper): answer with the label inside <Judgement></Judgement>.

Data, by `data.source` (several joined by '+' make a multi-task mix; each part is '<glue task>:<where>'):
- 'qnli:xquad:<lang>' or 'qnli:mlqa-de' (or 'qnli:<squad.json>'): QNLI built offline the way GLUE built it from
  SQuAD: a (question, one sentence of its paragraph) pair is "entailment" when the sentence holds the gold answer
  span. Per question, the answer sentence and one other sentence of the same paragraph that does not hold the
  answer text anywhere (seeded choice), so labels are balanced and clean; questions whose paragraph has no such
  sentence are skipped and counted (`skipped_no_negative`).
- '<task>:<dir or file>.tsv' GLUE's own TSV files (the columns of GLUE's release: QNLI question/sentence,
  RTE and WNLI sentence1/sentence2, MNLI sentence1/sentence2/gold_label, SST-2 sentence, CoLA col 3, MRPC/QQP);
  '<task>:<file>.jsonl' rows {"text_a", "text_b" (optional), "label"}.
- '<task>:hf:<dataset>:<config>:<split>' the hub (glue/super_glue) for users who have one.
Splits are grouped by `group` (the paragraph for QNLI-from-SQuAD, the first text otherwise), so no held-out
paragraph was seen in training. Reward: `label` (1 right, 0 another label, -1 wrong format). Metrics: accuracy
(primary), wrong-format rate, answer length, accuracy per GLUE task in a mix. `task.params.few_shot` = k puts k training
demonstrations (balanced over labels, fixed seed) before every prompt: the paper's few-shot baseline.
"""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

from rewards.nlu import TASK_LABELS
from rewards.registry import LabelReward
from rewards.sentences import split_sentences
from tasks.base import Task, means, split_by
from tasks.squad import load_examples, reference_sentence, source_lang

QUESTIONS = {
    "qnli": ("Does the sentence contain the answer to the question?\nQuestion: {a}\nSentence: {b}",
             "entailment if it does, not_entailment if it does not"),
    "rte": ("Does the first text entail the second?\nText: {a}\nHypothesis: {b}", "entailment or not_entailment"),
    "wnli": ("Does the first text entail the second?\nText: {a}\nHypothesis: {b}", "entailment or not_entailment"),
    "mnli": ("What is the relation of the hypothesis to the premise?\nPremise: {a}\nHypothesis: {b}",
             "entailment, neutral or contradiction"),
    "sst2": ("What is the sentiment of the sentence?\nSentence: {a}", "positive or negative"),
    "cola": ("Is the sentence grammatically acceptable?\nSentence: {a}", "acceptable or unacceptable"),
    "mrpc": ("Do the two sentences mean the same?\nSentence 1: {a}\nSentence 2: {b}", "yes or no"),
    "qqp": ("Do the two questions ask the same?\nQuestion 1: {a}\nQuestion 2: {b}", "yes or no"),
}
# GLUE TSV columns (header names) of text_a, text_b, label, and how its labels map to ours
TSV_COLUMNS = {
    "qnli": ("question", "sentence", "label"), "rte": ("sentence1", "sentence2", "label"),
    "wnli": ("sentence1", "sentence2", "label"), "mnli": ("sentence1", "sentence2", "gold_label"),
    "sst2": ("sentence", None, "label"), "mrpc": ("#1 String", "#2 String", "Quality"),
    "qqp": ("question1", "question2", "is_duplicate"),
}
NUMERIC_LABELS = {"sst2": ("negative", "positive"), "cola": ("unacceptable", "acceptable"), "mrpc": ("no", "yes"),
                  "qqp": ("no", "yes"), "wnli": ("not_entailment", "entailment"),
                  "qnli": ("entailment", "not_entailment"), "rte": ("entailment", "not_entailment"),
                  "mnli": ("entailment", "neutral", "contradiction")}  # GLUE's hub class ids


@dataclass(frozen=True)
class LabelExample:
    id: str
    task: str            # the GLUE task name (rewards/nlu.TASK_LABELS)
    text_a: str
    text_b: str | None
    label: str
    group: str           # examples of one group stay on one side of a split (QNLI: the paragraph)


@dataclass(frozen=True)
class LabelParams:
    few_shot: int = 0    # k demonstrations from the training split before every prompt (0 = zero-shot)
    few_shot_seed: int = 0

    def __post_init__(self):
        if not 0 <= self.few_shot <= 16:
            raise ValueError(f"few_shot must be in [0, 16], got {self.few_shot}")


def qnli_from_squad(source: str, lang: str | None = None, seed: int = 0,
                    limit: int | None = None) -> tuple[list[LabelExample], dict]:
    """Balanced QNLI pairs from SQuAD-format QA: the answer's sentence (entailment) and one other sentence of
    the same paragraph (not_entailment) per question."""
    qa, stats = load_examples(source, lang or source_lang(source), limit=limit)
    rng = random.Random(seed)
    out, single = [], 0
    for ex in qa:
        positive = reference_sentence(ex)
        # a negative must not hold the answer text anywhere (the span may recur outside its own sentence)
        others = [s for s in split_sentences(ex.context)
                  if s not in positive and positive not in s and not any(a in s for a in ex.answers)]
        if not others:
            single += 1
            continue
        group = f"{source}:{hash_text(ex.context)}"
        out.append(LabelExample(f"{ex.id}-pos", "qnli", ex.question, positive, "entailment", group))
        out.append(LabelExample(f"{ex.id}-neg", "qnli", ex.question, rng.choice(others), "not_entailment", group))
    return out, {**stats, "qnli_pairs": len(out), "skipped_no_negative": single}


def hash_text(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def read_glue_file(task: str, path: Path) -> tuple[list[LabelExample], dict]:
    """GLUE-format TSV (a file, or a folder holding train.tsv / dev.tsv joined) or JSONL with our field names."""
    files = sorted(p for name in ("train.tsv", "dev.tsv") if (p := path / name).is_file()) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no GLUE data at {path} (data.source): give a .tsv/.jsonl file or a folder with "
                                "train.tsv / dev.tsv")
    rows, skipped = [], 0
    for f in files:
        if f.suffix == ".jsonl":
            raw = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
            triples = [(r.get("text_a"), r.get("text_b"), r.get("label")) for r in raw]
        elif task == "cola":  # no header: source, label, original label, sentence
            raw = list(csv.reader(f.open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
            triples = [(r[3], None, r[1]) if len(r) >= 4 else (None, None, None) for r in raw]
        else:
            if task not in TSV_COLUMNS:
                raise ValueError(f"no TSV reader for GLUE task {task!r}; use a JSONL file {{text_a, text_b, label}}")
            a, b, lab = TSV_COLUMNS[task]
            raw = list(csv.DictReader(f.open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
            triples = [(r.get(a), r.get(b) if b else None, r.get(lab)) for r in raw]
        for i, (text_a, text_b, label) in enumerate(triples):
            label = to_label(task, label)
            if not isinstance(text_a, str) or not text_a.strip() or label is None:
                skipped += 1
                continue
            rows.append(LabelExample(f"{task}-{f.stem}-{i}", task, text_a, text_b, label, f"{task}:{text_a}"))
    return rows, {"loaded": len(rows), "skipped_malformed": skipped}


def to_label(task: str, raw) -> str | None:
    """A row's label as our label string: GLUE's names, or its class ids (hub and TSV), else None."""
    if raw is None:
        return None
    text = str(raw).strip().lower()
    if text in TASK_LABELS[task]:
        return text
    if text.isdigit() and int(text) < len(NUMERIC_LABELS.get(task, ())):
        return NUMERIC_LABELS[task][int(text)]
    return None


def load_hub(task: str, spec: str, limit: int | None) -> tuple[list[LabelExample], dict]:
    import datasets  # heavy: only here

    name, config, split = spec.split(":")
    ds = datasets.load_dataset(name, config, split=split)
    keys = [k for k in ("question", "sentence1", "sentence", "question1", "premise") if k in ds.column_names]
    keys_b = [k for k in ("sentence", "sentence2", "question2", "hypothesis") if k in ds.column_names and k not in keys[:1]]
    rows = []
    for i, r in enumerate(ds):
        label = to_label(task, r["label"])
        if label is not None:
            a = r[keys[0]]
            rows.append(LabelExample(f"{task}-{split}-{i}", task, a, r[keys_b[0]] if keys_b else None, label, a))
        if limit and len(rows) >= limit:
            break
    return rows, {"loaded": len(rows)}


def load_part(part: str, seed: int, limit: int | None) -> tuple[list[LabelExample], dict]:
    task, _, where = part.partition(":")
    if task not in TASK_LABELS or not where:
        raise ValueError(f"label-task source part {part!r} must be '<glue task>:<where>' with a task among "
                         f"{', '.join(TASK_LABELS)} (e.g. 'qnli:xquad:en')")
    if where.startswith("hf:"):
        return load_hub(task, where[3:], limit)
    if task == "qnli" and (where.startswith("xquad:") or where.startswith("mlqa-") or where.endswith(".json")):
        return qnli_from_squad(where, seed=seed, limit=limit)
    return read_glue_file(task, Path(where))


class LabelTask(Task):
    name = "labels"
    primary_metric = "accuracy"
    reward_fields = frozenset({"label", "task", "prompt"})
    default_rewards = ({"name": "label", "weight": 1.0, "params": {}},)
    default_source = "qnli:xquad:en"
    Params = LabelParams

    @classmethod
    def load(cls, source, data, params):
        examples, stats = [], {}
        for part in source.split("+"):
            rows, part_stats = load_part(part, data.split_seed, data.limit)
            examples += rows
            stats.update({f"{part}/{k}": v for k, v in part_stats.items()})
        return split_by(examples, lambda ex: ex.group, data), stats

    def demonstrations(self) -> list[LabelExample]:
        """k training examples, alternating over labels, the same for every prompt (seeded)."""
        k = self.params.few_shot
        if not k:
            return []
        if not self.splits.get("train"):
            raise ValueError("few-shot prompts draw their demonstrations from the training split, and there is none "
                             "here; evaluate a run's or preset's split (jobs/eval.py --split test), not --split all")
        pool = list(self.splits["train"])
        random.Random(self.params.few_shot_seed).shuffle(pool)
        by_label: dict[str, list[LabelExample]] = {}
        for ex in pool:
            by_label.setdefault(ex.label, []).append(ex)
        picked = [ex for row in zip(*by_label.values()) for ex in row][:k]
        return picked if len(picked) == k else pool[:k]

    def question(self, ex: LabelExample) -> str:
        text, labels = QUESTIONS[ex.task]
        return (f"{text.format(a=ex.text_a, b=ex.text_b or '')}\n"
                f"Answer with <Judgement>label</Judgement>, where label is {labels}.")

    @cached_property
    def demo_text(self) -> str:
        return "".join(f"{self.question(d)}\n{self.sft_target(d)}\n\n" for d in self.demonstrations())

    def content(self, example: LabelExample, cut: str | None = None) -> str:
        return self.demo_text + self.question(example)

    def reward_inputs(self, example: LabelExample) -> dict:
        """The label for the rule reward; the question (without few-shot demonstrations) for a reward model."""
        return {"label": example.label, "task": example.task, "prompt": self.question(example)}

    def sft_target(self, example: LabelExample) -> str:
        return f"<Judgement>{example.label}</Judgement>"

    def label_set(self, example: LabelExample) -> tuple[str, ...]:
        return TASK_LABELS[example.task]

    def metrics(self, texts: list[str], examples: Sequence[LabelExample]) -> dict[str, list[float]]:
        """Accuracy (the `label` reward is 1) and the wrong-format rate (its `wrong_format` part)."""
        values, parts = self.reward_parts(LabelReward(), texts, examples)
        return {"accuracy": [float(r == 1.0) for r in values], "wrong_format": parts["wrong_format"]}

    def evaluate(self, texts: list[str], examples: Sequence[LabelExample]) -> dict[str, float]:
        """Means of `score`, and in a mix of GLUE tasks the accuracy of each (accuracy_<task>)."""
        per = self.score(texts, examples)
        out = means(per)
        tasks = sorted({ex.task for ex in examples})
        if len(tasks) > 1:
            for t in tasks:
                mine = [a for a, ex in zip(per["accuracy"], examples) if ex.task == t]
                out[f"accuracy_{t}"] = sum(mine) / len(mine)
        return out
