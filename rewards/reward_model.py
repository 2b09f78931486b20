"""A trained reward model as a reward: an HF sequence-classification model with one output, scoring
(prompt, completion) pairs (the NLU paper's appendix uses a BERT; the packaged all-MiniLM-L6-v2 is a BERT and
serves as the backbone here). Trained with the Bradley-Terry loss by jobs/reward_model.py.

torch and transformers are imported inside the functions: reward actors that do not use it never load them.
"""
from __future__ import annotations

from functools import cache


@cache
def load_reward_model(path: str):
    """(model, tokenizer) of a reward-model folder, in eval mode; raises naming the fix when it is not one."""
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from common.device import device_for

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"reward model folder {path!r} has no config.json; train one with "
                                "`python jobs/reward_model.py --config <preset>` and pass its folder as params.path")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval().to(device_for())
    return model, AutoTokenizer.from_pretrained(path)


def encode(tokenizer, prompts: list[str], completions: list[str], max_length: int):
    """Pair encoding: the prompt is cut first when the pair is too long (the completion is what is judged)."""
    return tokenizer(prompts, completions, truncation="only_first", max_length=max_length, padding=True,
                     return_tensors="pt")


def forward_scores(model, tokenizer, prompts: list[str], completions: list[str], max_length: int):
    """[B] scalar scores with gradient (training) or without (under torch.no_grad)."""
    batch = encode(tokenizer, prompts, completions, max_length).to(model.device)
    return model(**batch).logits.squeeze(-1)  # [B]


def scores(path: str, prompts: list[str], completions: list[str], max_length: int = 384,
           batch_size: int = 32) -> list[float]:
    import torch

    model, tok = load_reward_model(path)
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            out += forward_scores(model, tok, prompts[i:i + batch_size], completions[i:i + batch_size],
                                  max_length).tolist()
    return out
