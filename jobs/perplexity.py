"""Perplexity on held-out general English: does task training cost general language ability?

The text (jobs/data/heldout_text.txt) is twelve short paragraphs written for this project, on everyday
topics and unrelated to XQuAD, so no model here has trained on them. Each paragraph is scored on its own
with the model's plain causal-LM loss (no chat template): perplexity = exp(total NLL / total predicted
tokens). It is a small set (818 SmolLM2 tokens), good for comparing checkpoints of one model against each
other, not against published numbers.

  python jobs/perplexity.py --model embedded:smollm2-135m-instruct [--model runs/R/checkpoints/best ...]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

TEXT = Path(__file__).resolve().parent / "data" / "heldout_text.txt"


def paragraphs(path: Path = TEXT) -> list[str]:
    return [p.strip() for p in path.read_text().split("\n\n") if p.strip()]


def perplexity(model_spec: str, texts: list[str]) -> dict:
    """{"perplexity", "nll_per_token", "tokens"} of the model over `texts` (each scored separately)."""
    import torch

    from common.models import load_lm, load_tokenizer, resolve_model

    path = resolve_model(model_spec)
    tok, model = load_tokenizer(path), load_lm(path)
    nll, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok(text)["input_ids"]])            # [1, L]
            logits = model(ids).logits[:, :-1].float()              # [1, L-1, V]
            logp = torch.log_softmax(logits, dim=-1)
            tgt = ids[:, 1:]                                        # [1, L-1]
            nll -= logp.gather(-1, tgt.unsqueeze(-1)).sum().item()
            count += tgt.numel()
    return {"model": model_spec, "perplexity": math.exp(nll / count), "nll_per_token": nll / count,
            "tokens": count, "paragraphs": len(texts)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="model spec; repeat to compare")
    p.add_argument("--out", help="write the results to this JSON file")
    args = p.parse_args(argv)
    rows = [perplexity(m, paragraphs()) for m in args.model]
    for r in rows:
        print(f"[ppl] {r['model']}: {r['perplexity']:.2f} over {r['tokens']} tokens", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
