"""Per-token logprobs of completions, with the LM head applied only at completion positions.

Full logits for a padded batch are B x L x V floats (V = 49,152 here): 16 sequences of 700 tokens are
2.2 GB per copy, which is what OOM-killed a naive learner on this machine. The body runs on the whole
sequence; only the T positions that predict completion tokens go through the head.
"""
from __future__ import annotations

import torch


def pad_batch(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int):
    """Right-padded [B, L] input ids and mask, plus the [B, T] positions whose outputs predict each
    completion token and the [B, T] completion targets and mask."""
    lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
    B, L = len(prompt_ids), max(lengths)
    T = max(1, max(len(c) for c in completion_ids))
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)  # [B, L]
    attn = torch.zeros((B, L), dtype=torch.long)  # [B, L]
    positions = torch.zeros((B, T), dtype=torch.long)  # [B, T]
    targets = torch.full((B, T), pad_id, dtype=torch.long)  # [B, T]
    mask = torch.zeros((B, T), dtype=torch.float32)  # [B, T]
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        seq = list(p) + list(c)
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        n = len(c)
        if n:
            # Output at position len(p)-1+t predicts completion token t.
            positions[i, :n] = torch.arange(len(p) - 1, len(p) - 1 + n)
            targets[i, :n] = torch.tensor(c)
            mask[i, :n] = 1.0
    return input_ids, attn, positions, targets, mask


def body_and_head(model):
    """(transformer body returning hidden states, LM head) of a causal LM."""
    head = model.get_output_embeddings()
    body = getattr(model, model.base_model_prefix, None) or model.base_model
    return body, head


def completion_logits(model, input_ids, attn, positions) -> torch.Tensor:
    """Logits [B, T, V] at the completion-predicting positions only."""
    body, head = body_and_head(model)
    hidden = body(input_ids=input_ids, attention_mask=attn).last_hidden_state  # [B, L, H]
    idx = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # [B, T, H]
    picked = torch.gather(hidden, 1, idx)  # [B, T, H]
    return head(picked)  # [B, T, V]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target], in fp32. logits [B, T, V], targets [B, T] -> [B, T]."""
    logits = logits.float()
    return torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per position: [B, T, V] -> [B, T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def to_ragged(values: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    """[B, T] padded tensor -> B lists of the valid entries."""
    lengths = mask.sum(-1).long().tolist()
    return [values[i, :n].tolist() for i, n in enumerate(lengths)]


def from_ragged(rows: list[list[float]], T: int) -> torch.Tensor:
    out = torch.zeros((len(rows), T), dtype=torch.float32)  # [B, T]
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out


@torch.no_grad()
def sequence_logprobs(model, prompt_ids, completion_ids, pad_id: int, micro_batch_size: int,
                      autocast_bf16: bool = False) -> list[list[float]]:
    """Logprobs of every completion token under `model`, in micro-batches (no grad)."""
    out: list[list[float]] = []
    for s in range(0, len(prompt_ids), micro_batch_size):
        ids, attn, pos, tgt, mask = pad_batch(prompt_ids[s:s + micro_batch_size],
                                              completion_ids[s:s + micro_batch_size], pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
            logits = completion_logits(model, ids, attn, pos)
        out.extend(to_ragged(token_logprobs(logits, tgt), mask))
    return out
