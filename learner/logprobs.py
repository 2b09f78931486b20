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
    """(transformer body returning hidden states, LM head) of a causal LM (a peft model: of the model it wraps,
    whose layers carry the adapters)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
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


def group_runs(prompt_ids: list[list[int]]) -> list[tuple[int, int]]:
    """(start, stop) of each maximal run of identical consecutive prompts (a GRPO group, or a lone row)."""
    out, i = [], 0
    while i < len(prompt_ids):
        j = i + 1
        while j < len(prompt_ids) and prompt_ids[j] == prompt_ids[i]:
            j += 1
        out.append((i, j))
        i = j
    return out


def grouped_prompt_logits(model, prompts: list[list[int]], sizes: list[int], completions: list[list[int]],
                          pad_id: int, device: torch.device | str = "cpu"):
    """Logits [B, T, V] for n groups (group g: prompt `prompts[g]` and the next `sizes[g]` of the B completions),
    running each prompt once.

    Pass 1 runs the n prompts right-padded to the longest, [n, P]; pass 2 runs every completion's first T-1
    tokens [B, T-1] against its own group's prompt cache (the cache's rows repeated per completion, the prompt's
    padding masked out, positions continuing at its own prompt length). Gradients flow back through the shared
    cache, so values and gradients equal B separate padded passes (tested), at a fraction of the cost: a prompt
    (~300 tokens here) dominates each sequence (~50 tokens of completion), so a group of 4 costs ~1.5 sequences
    instead of 4, and packing several groups gives each matmul n times the rows. Returns (logits, targets, mask).
    """
    body, head = body_and_head(model)
    n, B = len(prompts), len(completions)
    if sum(sizes) != B or len(sizes) != n:
        raise ValueError(f"group sizes {sizes} do not add up to {B} completions")
    lens = torch.tensor([len(p) for p in prompts], device=device)  # [n]
    P, T = int(lens.max()), max(1, max(len(c) for c in completions))
    ids = torch.full((n, P), pad_id, dtype=torch.long)  # [n, P]
    p_mask = torch.zeros((n, P), dtype=torch.long)  # [n, P]
    for g, p in enumerate(prompts):
        ids[g, : len(p)] = torch.tensor(p)
        p_mask[g, : len(p)] = 1
    targets = torch.full((B, T), pad_id, dtype=torch.long)  # [B, T]
    mask = torch.zeros((B, T), dtype=torch.float32)  # [B, T]
    for i, c in enumerate(completions):
        if c:
            targets[i, : len(c)] = torch.tensor(c)
            mask[i, : len(c)] = 1.0
    ids, p_mask, targets, mask = ids.to(device), p_mask.to(device), targets.to(device), mask.to(device)
    row = torch.repeat_interleave(torch.arange(n, device=device), torch.tensor(sizes, device=device))  # [B] group
    out = body(input_ids=ids, attention_mask=p_mask if n > 1 else None, use_cache=True)
    hidden = out.last_hidden_state  # [n, P, H]
    h_last = hidden[row, lens[row] - 1].unsqueeze(1)  # [B, 1, H] each prompt's last output predicts token 0
    if T == 1:
        return head(h_last), targets, mask
    cache = out.past_key_values
    cache.reorder_cache(row)  # index_select of each completion's group: differentiable
    attn = torch.cat([p_mask[row], mask[:, : T - 1].long()], dim=1)  # [B, P+T-1]
    pos = lens[row].unsqueeze(1) + torch.arange(T - 1, device=device).unsqueeze(0)  # [B, T-1]
    rest = body(input_ids=targets[:, : T - 1], attention_mask=attn, position_ids=pos,
                past_key_values=cache, use_cache=True).last_hidden_state  # [B, T-1, H]
    return head(torch.cat([h_last, rest], dim=1)), targets, mask  # [B, T, V]


def seq2seq_logits(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                   device: torch.device | str = "cpu"):
    """Logits [B, T, V] of an encoder-decoder (flan-t5): the prompt is the encoder input and the completion is
    teacher-forced after the decoder start token, so position t predicts completion token t, exactly as
    `generate` produced it. Returns (logits, targets [B, T], mask [B, T])."""
    B, P = len(prompt_ids), max(1, max(len(p) for p in prompt_ids))
    T = max(1, max(len(c) for c in completion_ids))
    enc = torch.full((B, P), pad_id, dtype=torch.long)  # [B, P]
    enc_mask = torch.zeros((B, P), dtype=torch.long)  # [B, P]
    dec = torch.full((B, T), pad_id, dtype=torch.long)  # [B, T]
    dec[:, 0] = model.config.decoder_start_token_id
    targets = torch.full((B, T), pad_id, dtype=torch.long)  # [B, T]
    mask = torch.zeros((B, T), dtype=torch.float32)  # [B, T]
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        enc[i, : len(p)] = torch.tensor(p)
        enc_mask[i, : len(p)] = 1
        if c:
            dec[i, 1: len(c)] = torch.tensor(c[:-1])
            targets[i, : len(c)] = torch.tensor(c)
            mask[i, : len(c)] = 1.0
    # Right padding of the decoder needs no mask: causal attention never looks past a real token.
    out = model(input_ids=enc.to(device), attention_mask=enc_mask.to(device), decoder_input_ids=dec.to(device))
    return out.logits, targets.to(device), mask.to(device)  # [B, T, V]


def chunks(prompt_ids: list[list[int]], micro_batch_size: int) -> list[tuple[slice, bool]]:
    """Micro-batches of at most `micro_batch_size` consecutive sequences. Runs sharing one prompt (GRPO groups)
    become shared-prompt chunks: whole consecutive groups packed together while they fit (more rows per matmul,
    fewer gradient accumulations), a group larger than micro_batch_size split; other rows go into padded chunks."""
    n = len(prompt_ids)
    stop = [0] * n  # stop[k]: end of the run of identical prompts that row k belongs to
    for a, b in group_runs(prompt_ids):
        stop[a:b] = [b] * (b - a)
    out, i = [], 0
    while i < n:
        j = min(stop[i], i + micro_batch_size)
        if j - i > 1:
            if j == stop[i]:  # the (rest of the) group fits whole: pack the next whole groups that fit too
                while j < n and stop[j] - j > 1 and stop[j] - i <= micro_batch_size:
                    j = stop[j]
            out.append((slice(i, j), True))
        else:
            j = i + 1
            # Stop before a row that starts a group, so groups keep the shared-prompt path.
            while (j < n and j - i < micro_batch_size and prompt_ids[j] != prompt_ids[j - 1]
                   and not (j + 1 < n and prompt_ids[j + 1] == prompt_ids[j])):
                j += 1
            out.append((slice(i, j), False))
        i = j
    return out


def chunk_logits(model, prompt_ids, completion_ids, pad_id: int, sl: slice, shared: bool):
    """(logits [b, T, V], targets [b, T], mask [b, T]) for one chunk from `chunks`, on the model's device.
    Encoder-decoder models run the chunk through `seq2seq_logits` (their prompt is the encoder's input)."""
    device = next(model.parameters()).device
    if getattr(model.config, "is_encoder_decoder", False):
        return seq2seq_logits(model, prompt_ids[sl], completion_ids[sl], pad_id, device)
    if shared:
        runs = group_runs(prompt_ids[sl])
        return grouped_prompt_logits(model, [prompt_ids[sl.start + a] for a, _ in runs], [b - a for a, b in runs],
                                     completion_ids[sl], pad_id, device)
    ids, attn, pos, tgt, mask = (t.to(device) for t in pad_batch(prompt_ids[sl], completion_ids[sl], pad_id))
    return completion_logits(model, ids, attn, pos), tgt, mask


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
    for sl, shared in chunks(prompt_ids, micro_batch_size):
        with torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            logits, tgt, mask = chunk_logits(model, prompt_ids, completion_ids, pad_id, sl, shared)
        out.extend(to_ragged(token_logprobs(logits, tgt), mask))
    return out
