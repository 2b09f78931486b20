"""Per-token logprobs of completions: micro-batches by a token budget, the LM head only at completion tokens, in
chunks.

Full logits for a padded batch are B x L x V floats (V = 49,152 here): 16 sequences of 700 tokens are
2.2 GB per copy, which is what OOM-killed a naive learner on this machine, and 64 prompts x 8 samples x 512 tokens
made 98 GiB on a GPU. So: rows are sorted by length (`length_order`) and cut into micro-batches of about a token
budget (`chunks`), the body runs on each micro-batch (`chunk_hidden`: a GRPO group's prompt once), and only the
hidden states that predict real completion tokens go through the head, a bounded number of positions at a time,
recomputed in the backward pass (`head_logprobs`).
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


def completion_hidden(model, input_ids, attn, positions) -> torch.Tensor:
    """Hidden states [B, T, H] at the completion-predicting positions only (the LM head is applied later, in
    chunks: `head_logprobs`)."""
    body, _ = body_and_head(model)
    hidden = body(input_ids=input_ids, attention_mask=attn).last_hidden_state  # [B, L, H]
    idx = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # [B, T, H]
    return torch.gather(hidden, 1, idx)  # [B, T, H]


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


def grouped_prompt_hidden(model, prompts: list[list[int]], sizes: list[int], completions: list[list[int]],
                          pad_id: int, device: torch.device | str = "cpu", two_passes: bool = False):
    """Hidden states [B, T, H] at the completion-predicting positions for n groups (group g: prompt `prompts[g]` and the next `sizes[g]` of the B completions),
    running each prompt once.

    Pass 1 runs the n prompts right-padded to the longest, [n, P]; pass 2 runs every completion's first T-1
    tokens [B, T-1] against its own group's prompt cache (the cache's rows repeated per completion, the prompt's
    padding masked out, positions continuing at its own prompt length). Gradients flow back through the shared
    cache, so values and gradients equal B separate padded passes (tested), at a fraction of the cost: a prompt
    (~300 tokens here) dominates each sequence (~50 tokens of completion), so a group of 4 costs ~1.5 sequences
    instead of 4, and packing several groups gives each matmul n times the rows. Returns (hidden, targets, mask).
    `two_passes`: run pass 2 even for one-token completions (on a masked pad token, its output weighted 0), so that
    the body runs twice whatever the data (FSDP workers in lockstep: learner/fsdp.py).
    """
    body, _ = body_and_head(model)
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
    if T == 1 and not two_passes:
        return h_last, targets, mask
    cache = out.past_key_values
    cache.reorder_cache(row)  # index_select of each completion's group: differentiable
    if T == 1:  # lockstep: the second pass over one masked token, whose output adds 0 (its backward still runs)
        attn = torch.cat([p_mask[row], torch.zeros_like(mask, dtype=torch.long)], dim=1)  # [B, P+1]
        rest = body(input_ids=torch.full_like(targets, pad_id), attention_mask=attn,
                    position_ids=lens[row].unsqueeze(1), past_key_values=cache, use_cache=True).last_hidden_state
        return h_last + 0.0 * rest, targets, mask  # [B, 1, H]
    attn = torch.cat([p_mask[row], mask[:, : T - 1].long()], dim=1)  # [B, P+T-1]
    pos = lens[row].unsqueeze(1) + torch.arange(T - 1, device=device).unsqueeze(0)  # [B, T-1]
    rest = body(input_ids=targets[:, : T - 1], attention_mask=attn, position_ids=pos,
                past_key_values=cache, use_cache=True).last_hidden_state  # [B, T-1, H]
    return torch.cat([h_last, rest], dim=1), targets, mask  # [B, T, H]


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


def chunk_cost(prompt_ids, completion_ids, shared: bool) -> int:
    """Positions the transformer body computes for one micro-batch, padding included: a shared-prompt pass runs its
    n prompts padded to the longest and every completion's first T-1 tokens padded to the longest; a padded pass
    b rows of the longest sequence. (The token budget of `chunks` counts this.)"""
    T = max(1, max(len(c) for c in completion_ids))
    if shared:
        runs = group_runs(prompt_ids)
        return len(runs) * max(len(prompt_ids[a]) for a, _ in runs) + len(completion_ids) * (T - 1)
    return len(prompt_ids) * max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))


def length_order(prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> list[int]:
    """A permutation of the rows, longest first, that keeps each GRPO group (a run of identical prompts) whole and
    in order: packed micro-batches then hold sequences of like lengths and pad little (NeMo-RL's dynamic batching,
    verl's dynamic batch size). Stable: equal lengths keep their order."""
    runs = group_runs(prompt_ids)
    size = [len(prompt_ids[a]) + max(len(c) for c in completion_ids[a:b]) for a, b in runs]
    order = sorted(range(len(runs)), key=lambda r: -size[r])
    return [i for r in order for i in range(*runs[r])]


def chunks(prompt_ids: list[list[int]], micro_batch_size: int | None, completion_ids: list[list[int]] | None = None,
           max_tokens: int | None = None, share: bool = True) -> list[tuple[slice, bool]]:
    """Micro-batches of consecutive rows: at most `micro_batch_size` sequences (None: no cap) and, with `max_tokens`,
    at most that many positions by `chunk_cost` (a single row over the budget still runs alone). Runs sharing one
    prompt (GRPO groups) become shared-prompt chunks: whole consecutive groups packed together while they fit, a
    group too large split; other rows go into padded chunks (every row, with share=False: a caller that runs padded
    passes only). Gradients accumulate over chunks exactly (learner/losses.py's global denominator), so any cut gives
    the full batch's update."""
    n = len(prompt_ids)
    cap = micro_batch_size or n
    if max_tokens is not None and completion_ids is None:
        raise ValueError("a token budget needs the completions' lengths")

    def fits(a: int, b: int, shared: bool) -> bool:
        return b - a <= cap and (max_tokens is None or b - a == 1 or
                                 chunk_cost(prompt_ids[a:b], completion_ids[a:b], shared) <= max_tokens)

    stop = [k + 1 for k in range(n)]  # stop[k]: end of the run of identical prompts that row k belongs to
    for a, b in group_runs(prompt_ids) if share else ():
        stop[a:b] = [b] * (b - a)
    out, i = [], 0
    while i < n:
        if stop[i] - i > 1:  # (the rest of) a group: whole if it fits, else cut into near-equal pieces that fit;
            rest = stop[i] - i  # a whole group then takes the next whole groups that fit too
            pieces = next((k for k in range(1, rest + 1) if all(
                fits(a, min(a + -(-rest // k), stop[i]), True) for a in range(i, stop[i], -(-rest // k)))), rest)
            j = i + -(-rest // pieces)
            if j == stop[i] and (i == 0 or stop[i - 1] != stop[i]):  # the group was whole
                while j < n and stop[j] - j > 1 and fits(i, stop[j], True):
                    j = stop[j]
            out.append((slice(i, j), j - i > 1))
        else:
            j = i + 1
            # Stop before a row that starts a group, so groups keep the shared-prompt path.
            while j < n and stop[j] - j == 1 and fits(i, j + 1, False):
                j += 1
            out.append((slice(i, j), False))
        i = j
    return out


def chunk_hidden(model, prompt_ids, completion_ids, pad_id: int, sl: slice, shared: bool, uniform: bool = False):
    """(hidden [b, T, H], head, targets [b, T], mask [b, T]) for one chunk from `chunks`, on the model's device: the
    body's output at the completion-predicting positions and the LM head to apply to it (`head_logprobs`).
    Encoder-decoder models give their logits [b, T, V] and head None (their prompt is the encoder's input).
    `uniform`: every chunk through the shared-prompt path with two body passes (a row of its own is a group of
    one), so the body runs the same number of times in every chunk (FSDP workers in lockstep: learner/fsdp.py)."""
    device = next(model.parameters()).device
    if getattr(model.config, "is_encoder_decoder", False):
        logits, tgt, mask = seq2seq_logits(model, prompt_ids[sl], completion_ids[sl], pad_id, device)
        return logits, None, tgt, mask
    _, head = body_and_head(model)
    if shared or uniform:
        runs = group_runs(prompt_ids[sl])
        hidden, tgt, mask = grouped_prompt_hidden(model, [prompt_ids[sl.start + a] for a, _ in runs],
                                                  [b - a for a, b in runs], completion_ids[sl], pad_id, device,
                                                  two_passes=uniform)
        return hidden, head, tgt, mask
    ids, attn, pos, tgt, mask = (t.to(device) for t in pad_batch(prompt_ids[sl], completion_ids[sl], pad_id))
    return completion_hidden(model, ids, attn, pos), head, tgt, mask


# Logits that exist at once in `head_logprobs`: 2^27 floats (512 MiB in fp32), e.g. 2,730 positions of a
# 49,152-token vocabulary. Without the cut, 64 prompts x 8 samples x 512 tokens made 98 GiB of logits on a GPU.
HEAD_CHUNK_ELEMENTS = 2**27


def _head_stats(h, tgt, rh, head, ref_head, entropy: bool):
    """logp [n], entropy [n] or None (no grad), KL(pi || pi_ref) [n] or None, for n positions' hidden states."""
    logits = (head(h) if head is not None else h).float()  # [n, V]
    logz = torch.logsumexp(logits, dim=-1)  # [n]
    logp = logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - logz  # [n]
    ent = kl = None
    if entropy:
        with torch.no_grad():
            lsm = logits - logz.unsqueeze(-1)  # [n, V]
            ent = -(lsm.exp() * lsm).sum(-1)  # [n]
    if rh is not None:
        from learner.losses import full_kl

        ref_logits = (ref_head(rh) if ref_head is not None else rh).float()  # [n, V]
        kl = full_kl(logits, ref_logits)  # [n]
    return logp, ent, kl


def head_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, *, entropy: bool = False,
                  ref: tuple | None = None, max_elements: int | None = None):
    """Logprobs [b, T] of `targets` under head(hidden) (head None: `hidden` are logits already), computed over the
    valid positions only, in chunks of at most `max_elements` logits; with gradient, each chunk's logits are
    recomputed in the backward pass (activation checkpointing) instead of kept, so [b, T, V] never exists at once.
    `entropy`: also the entropy [b, T] of each position's distribution (no gradient). `ref`: (ref_head, ref_hidden)
    of a frozen reference: also the exact full-vocabulary KL(pi || pi_ref) [b, T] (with gradient). Padded positions
    are 0 in every output. Returns (logp, entropy or None, kl or None)."""
    b, T = targets.shape
    keep = mask.bool().reshape(-1)  # [b*T]
    flat = lambda x: x.reshape(b * T, -1)[keep]  # noqa: E731  [N, H] or [N, V]: the valid positions
    h, tgt = flat(hidden), targets.reshape(-1)[keep]  # [N, H], [N]
    ref_head, rh = (ref[0], flat(ref[1])) if ref is not None else (None, None)
    V = head.out_features if head is not None else hidden.shape[-1]
    step = max(1, (max_elements or HEAD_CHUNK_ELEMENTS) // V)  # the module's figure at call time (tests shrink it)
    parts = []
    for a in range(0, h.shape[0], step):
        args = (h[a:a + step], tgt[a:a + step], None if rh is None else rh[a:a + step])
        if torch.is_grad_enabled() and h.requires_grad and h.shape[0] > step:
            from torch.utils.checkpoint import checkpoint

            parts.append(checkpoint(_head_stats, *args, head, ref_head, entropy, use_reentrant=False))
        else:
            parts.append(_head_stats(*args, head, ref_head, entropy))

    def unflat(i: int):
        if parts and parts[0][i] is None:
            return None
        vals = torch.cat([p[i] for p in parts]) if parts else torch.zeros(0, device=targets.device)  # [N]
        out = torch.zeros(b * T, dtype=torch.float32, device=targets.device)  # [b*T]
        return out.masked_scatter(keep, vals.float()).reshape(b, T)  # [b, T]

    return unflat(0), (unflat(1) if entropy else None), (unflat(2) if ref is not None else None)


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
def sequence_logprobs(model, prompt_ids, completion_ids, pad_id: int, micro_batch_size: int | None,
                      autocast_bf16: bool = False, max_tokens: int | None = None, run=None,
                      lockstep=None) -> list[list[float]]:
    """Logprobs of every completion token under `model` (no grad), in micro-batches of `chunks` over the rows in
    `length_order`; returned in the callers' order. `run(fn, *args)`: how a pass reaches the model (a sharded
    model's root, learner/fsdp.py; default `fn(model, *args)`). Sharded workers either all call this with the same
    rows, or each with its own and `lockstep(n) -> the most micro-batches of any worker`: then every pass is
    uniform and a worker with fewer runs empty ones (learner/fsdp.py)."""
    order = length_order(prompt_ids, completion_ids)
    p, c = [prompt_ids[i] for i in order], [completion_ids[i] for i in order]
    out: list[list[float]] = [[] for _ in order]
    device = next(model.parameters()).device
    run = run or (lambda fn, *args: fn(model, *args))
    cut = chunks(p, micro_batch_size, c, max_tokens) if p else []
    uniform = lockstep is not None
    empty = lockstep(len(cut)) - len(cut) if uniform else 0  # agreed before any pass (learner/fsdp.py)
    done = 0
    for sl, shared in cut:
        logp, mask = run(_logprobs_pass, p, c, pad_id, sl, shared, device.type, autocast_bf16, uniform)
        for row in to_ragged(logp, mask):
            out[order[done]] = row
            done += 1
    for _ in range(empty):
        run(_logprobs_pass, [[pad_id, pad_id]], [[pad_id]], pad_id, slice(0, 1), True, device.type, autocast_bf16, True)
    return out


def _logprobs_pass(model, p, c, pad_id, sl, shared, device_type, autocast_bf16, uniform=False):
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast_bf16):
        hidden, head, tgt, mask = chunk_hidden(model, p, c, pad_id, sl, shared, uniform)
        logp, _, _ = head_logprobs(head, hidden, tgt, mask)
    return logp, mask
