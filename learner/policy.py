"""The learner (the policy, its optimizer and schedule) and the frozen reference, as plain classes.

cluster/groups.py runs them as Ray actors; the in-process backend uses them directly.
A GRPO or PPO step: the learner receives a TrainBatch and runs `inner_steps` optimizer steps over it
(learner/optim.py's `accumulate`, as SFT does), each accumulating gradients over micro-batches whose losses use
the full batch's denominator, so the accumulated gradient equals the full-batch gradient (tested).
"""
from __future__ import annotations

import random

import numpy as np
import torch

from common.checkpoint import TRAINER_DIR
from common.models import load_tokenizer
from common.types import AlgoParams, DPOParams, PreferenceBatch, TrainBatch  # noqa: F401  (AlgoParams: for callers)
from learner import lora as lora_lib
from learner import losses, optim
from learner.holder import hold, load_named_arrays  # noqa: F401  (load_named_arrays: for callers)
from learner.logprobs import (chunk_cost, chunk_hidden, chunks, from_ragged, group_runs, head_logprobs,
                              length_order, sequence_logprobs)
from learner.losses import dpo_loss


PROBE_REQUEST = "Describe in a few sentences the river that runs through your city."


# learner.max_tokens_per_micro_batch=auto, by device: positions of the body per forward/backward. On a GPU a few
# hundred rows leave the device idle (H200: micro-batch 4 of the preset step ran at 0.2% of its bf16 peak, 16 at
# 4x that speed). On a 2-core CPU (Zen 4, bf16; bench/learner.py, docs/cluster.md) bigger passes do not run faster:
# the preset step took 7.2 s at 1024, 9.1 s at 2048, 8.9 s at micro_batch_size 4, while memory grows with the pass.
TOKEN_BUDGET = {"cuda": 16384, "cpu": 1024}


def token_budget(asked: int | str | None, device: str) -> int | None:
    """learner.max_tokens_per_micro_batch: a number, 'auto' (TOKEN_BUDGET by device) or None (no budget)."""
    return TOKEN_BUDGET.get(device, TOKEN_BUDGET["cpu"]) if asked == "auto" else asked


def set_threads(threads: int | None) -> None:
    import os

    torch.set_num_threads(threads or os.cpu_count() or 1)


def reordered(batch: TrainBatch, order: list[int]) -> TrainBatch:
    """The batch's rows in `order` (every per-row field alike)."""
    import dataclasses

    take = lambda rows: [rows[i] for i in order] if rows else rows  # noqa: E731
    return dataclasses.replace(batch, **{f.name: take(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


def untied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with each shared tensor once (tied embeddings): safetensors refuses shared memory."""
    seen, out = set(), {}
    for k, v in state.items():
        if v.data_ptr() in seen:
            continue
        seen.add(v.data_ptr())
        out[k] = v.contiguous()
    return out


def _pair_rows(batch: PreferenceBatch, pairs: list[int]) -> tuple[list[list[int]], list[list[int]]]:
    """(prompts, completions) of these pairs as rows chosen, rejected, chosen, rejected, ... (2 per pair)."""
    prompts = [batch.prompt_ids[i] for i in pairs for _ in range(2)]
    return prompts, [c for i in pairs for c in (batch.chosen_ids[i], batch.rejected_ids[i])]


def chunk_tokens(prompt_ids, completion_ids, shared: bool, T: int) -> int:
    """Useful positions the transformer body runs on for one chunk of `chunks`: a shared-prompt chunk runs each of
    its groups' prompts once (the padding to the longest prompt is not counted) and each completion's first T-1
    tokens; a padded chunk runs b x its longest sequence."""
    if shared:
        prompts = sum(len(prompt_ids[a]) for a, _ in group_runs(prompt_ids))
        return prompts + (len(completion_ids) * (T - 1) if T > 1 else 0)
    return len(prompt_ids) * max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))


class Reference:
    """Frozen reference policy: logprobs of completions, nothing else, over a holder (learner/holder.py)."""

    def __init__(self, model_path: str, micro_batch_size: int | None = 4, precision: str = "fp32",
                 threads: int | None = None, max_tokens_per_micro_batch: int | str | None = None,
                 sharding: str = "replicate", offload: bool = False):
        set_threads(threads)
        self.held = hold(model_path, sharding=sharding, offload=offload, precision=precision, frozen=True)
        self.pad_id = load_tokenizer(model_path).pad_token_id
        self.micro_batch_size = micro_batch_size
        self.max_tokens = token_budget(max_tokens_per_micro_batch, self.held.device.type)
        self.choice, self.precision = self.held.choice, self.held.choice.precision

    @property
    def model(self) -> torch.nn.Module:
        return self.held.model

    def init_data_parallel(self, host: str, port: int, world_size: int, rank: int, backend: str) -> None:
        """Meet the other reference workers (sharded: each holds its part of the frozen model and answers its share
        of the rows in step with the others, learner/fsdp.py)."""
        self.held.join(host, port, world_size, rank, backend)

    def logprobs(self, prompt_ids, completion_ids) -> list[list[float]]:
        h = self.held
        return sequence_logprobs(h.model, prompt_ids, completion_ids, self.pad_id, self.micro_batch_size, h.autocast,
                                 self.max_tokens, run=h.run, lockstep=h.lockstep)

    def precision_choice(self) -> dict:
        return self.choice.as_dict()

    def reload(self, model_path: str) -> None:
        """Point the reference at another checkpoint (a phase's `reference: <folder>`, or on resume)."""
        self.held.load_folder(model_path)

    def load_weights(self, named_arrays) -> None:
        """Become the model these weights describe (the learner's, when a phase starts: reference=phase_start)."""
        self.held.load(named_arrays)


class Learner:
    def __init__(self, model_path: str, lr: float, total_steps: int, warmup_ratio: float = 0.1,
                 schedule: str = "cosine", weight_decay: float = 0.0, grad_clip: float = 1.0,
                 micro_batch_size: int | None = 4, precision: str = "fp32", threads: int | None = None,
                 gradient_checkpointing: bool = False, seed: int = 0, optimizer: str = "adamw",
                 lora: lora_lib.LoraSpec | None = None, max_tokens_per_micro_batch: int | str | None = None,
                 sharding: str = "replicate", offload: bool = False):
        set_threads(threads)
        torch.manual_seed(seed)
        # sharded: the model has no weights until init_data_parallel gives each worker its shards (learner/holder.py)
        self.held = hold(model_path, sharding=sharding, offload=offload, precision=precision, lora=lora,
                         gradient_checkpointing=gradient_checkpointing)
        self.device, self.lora = self.held.device, lora
        self.optimizer = optimizer
        self.tokenizer = load_tokenizer(model_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.micro_batch_size = micro_batch_size
        self.max_tokens = token_budget(max_tokens_per_micro_batch, self.device.type)
        self.choice, self.precision = self.held.choice, self.held.choice.precision
        self.grad_clip = grad_clip
        self.opt_args = (lr, total_steps, warmup_ratio, schedule, weight_decay)
        self.reset_optimizer(*self.opt_args)
        # Exact full-vocabulary KL needs the reference's logits at every completion position; shipping
        # B*T*V floats between actors costs more than holding a frozen copy here, so it lives here.
        self.full_ref = None
        self.updates = 0

    @property
    def model(self) -> torch.nn.Module:
        return self.held.model

    @property
    def dp(self):
        """learner/distributed.py DataParallel, with learner.workers > 1 (the holder's)."""
        return self.held.dp

    def init_data_parallel(self, host: str, port: int, world_size: int, rank: int, backend: str) -> None:
        """Join the learner workers' group (every worker at once: a rendezvous). Replicated workers start from the
        same weights and optimizer state and take the same steps; sharded ones get their shards of the model here
        and the optimizer over them (learner/holder.py). LoRA with workers: refused by the config."""
        if self.held.join(host, port, world_size, rank, backend):
            self.reset_optimizer(*self.opt_args)  # over this worker's shards

    def _run(self, fn, *args):
        """`fn(model, *args)`: one pass, as the holder reaches the model."""
        return self.held.run(fn, *args)

    def _dummy_loss(self) -> torch.Tensor:
        """A sharded worker with fewer micro-batches than the others: a one-row pass worth 0 (learner/fsdp.py)."""
        p = self.pad_id
        logp, _, _, _ = self._run(_policy_pass, [[p, p]], [[p]], p, slice(0, 1), True, True, self.held.autocast)
        return logp.sum() * 0.0

    def precision_choice(self) -> dict:
        return self.choice.as_dict()

    # ---- GRPO ---------------------------------------------------------------------------------
    def micro_batches(self, prompt_ids, completion_ids) -> list[tuple[slice, bool]]:
        """This learner's cut of rows (in `length_order`) into micro-batches: micro_batch_size sequences at most,
        max_tokens_per_micro_batch positions at most."""
        return chunks(prompt_ids, self.micro_batch_size, completion_ids, self.max_tokens)

    def train_step(self, batch: TrainBatch, algo: AlgoParams, inner_steps: int = 1,
                   totals: tuple[int, int] | None = None) -> dict:
        """`inner_steps` updates over the batch. With learner workers, `batch` is this worker's share and `totals`
        the whole batch's (sequences, completion tokens): the loss's denominators and the metrics' weights."""
        batch = reordered(batch, length_order(batch.prompt_ids, batch.completion_ids))  # like lengths together
        rows, tokens = totals or (len(batch.completion_ids), sum(batch.policy_tokens()))  # observation tokens: out
        denom = {"token-mean": float(tokens), "seq-mean-token-sum-norm": None}.get(algo.loss_agg, float(rows))
        norm_len = float(rows * algo.max_new_tokens)
        history = []
        if algo.old_logprobs not in ("engine", "learner"):  # the run plan resolves 'auto' (common/plan.py)
            raise ValueError(f"AlgoParams.old_logprobs must be 'engine' or 'learner', not {algo.old_logprobs!r}")
        own = algo.old_logprobs == "learner"
        self._own_old = {} if own else None  # chunk index -> [b, T] from the first update
        for _ in range(inner_steps):
            history.append(self._accumulate(batch, algo, denom, norm_len, float(tokens)))
        out = {k: float(np.mean([h[k] for h in history])) for k in history[-1] if k in history[0]}
        # The first inner step's ratio is 1 up to engine-vs-learner numerics, by construction.
        out["clip_frac_first"] = history[0]["clip_frac"]
        out["clip_frac_last"] = history[-1]["clip_frac"]
        for k in history[0]:  # engine vs learner and the TIS weights: as the first update saw them
            if k.startswith(("logprob_diff", "mismatch_", "tis_")):
                out[k] = history[0][k]
        return out

    def _old_logprobs(self, batch: TrainBatch, ci: int, sl: slice, logp, engine_old):
        """The ratio's denominator for chunk `ci` [b, T]: the learner's old logprobs when the batch brings them
        (PPO computes them once for all its minibatches), else this learner's at the batch's first update
        (old_logprobs='learner'), else the engine's. The first two are what TIS weighs against the engine's."""
        if batch.learner_old_logprobs:
            return from_ragged(batch.learner_old_logprobs[sl], logp.shape[1]).to(logp.device)
        if self._own_old is not None:
            return self._own_old.setdefault(ci, logp.detach())
        return engine_old

    def _accumulate(self, batch: TrainBatch, algo: AlgoParams, denom, norm_len: float, tokens: float) -> dict:
        """One update over the batch's micro-batches; metrics are token-weighted means over the batch."""
        work = {"tokens_forward": 0.0, "head_positions": 0.0, "micro_batches": 0.0}  # FLOP counts, batching
        out = optim.accumulate(self.model, self.opt, self.sched,
                               enumerate(self.micro_batches(batch.prompt_ids, batch.completion_ids)),
                               lambda chunk: self._chunk_loss(batch, algo, denom, norm_len, *chunk, work),
                               self.grad_clip, total_weight=max(tokens, 1.0), dp=self.dp, dummy=self._dummy_loss)
        self.updates += 1
        if self.dp is not None:  # the batch's work, summed over the learner workers like the other metrics
            work = self.dp.reduce_metrics(work)
        return {**out, **work}

    def _chunk_loss(self, batch: TrainBatch, algo: AlgoParams, denom, norm_len: float, ci: int,
                    chunk: tuple[slice, bool], work: dict) -> tuple[torch.Tensor, dict, float]:
        """(loss, metrics, valid tokens) of one micro-batch: the policy loss over the batch's denominator."""
        sl, shared = chunk
        full = algo.kl_kind == "full"  # the plan's decision; the copy is there when the phase asked for it
        if full and self.full_ref is None:
            raise RuntimeError("kl_kind=full needs the learner's frozen copy: set_full_reference when the phase starts")
        logp, entropy, kl_mat, mask = self._run(_policy_pass, batch.prompt_ids, batch.completion_ids, self.pad_id, sl,
                                                shared, self.held.uniform, self.held.autocast, True,
                                                self.full_ref if full else None)  # [b, T] each
        T, dev = mask.shape[1], mask.device
        if batch.policy_mask is not None:  # multi-turn: observation tokens are context, never the policy's choice
            mask = mask * from_ragged(batch.policy_mask[sl], T).to(dev)  # [b, T]
        engine_old = from_ragged(batch.old_logprobs[sl], T).to(dev)  # [b, T] what the engine sampled with
        old = self._old_logprobs(batch, ci, sl, logp, engine_old)  # [b, T]
        is_w, tis_m = None, {}
        if old is not engine_old and algo.tis_cap is not None:
            is_w, tis_m = losses.truncated_is_weights(old, engine_old, mask, algo.tis_cap)  # [b, T]
        ref = from_ragged(batch.ref_logprobs[sl], T).to(dev) if batch.ref_logprobs else None  # [b, T]
        rows = batch.advantages[sl]
        adv = (from_ragged(rows, T).to(dev) if rows and isinstance(rows[0], list)  # [b, T] per token (PPO)
               else torch.tensor(rows, dtype=torch.float32, device=dev))  # [b] per sequence (GRPO)
        use_sampled_kl = ref is not None and algo.kl_kind != "full"
        loss, m = losses.policy_loss(
            logp, old, adv, mask, clip_eps=algo.clip_eps, clip_eps_high=algo.clip_eps_high,
            ref_logprobs=ref if use_sampled_kl else None, beta=algo.beta if use_sampled_kl else 0.0,
            kl_kind=algo.kl_kind if use_sampled_kl else "k3", agg_mode=algo.loss_agg,
            norm_len=norm_len, global_denominator=denom, is_weights=is_w)
        # engine vs the learner's policy that the batch is judged against (its old logprobs; at the first
        # update of an engine-ratio batch, the learner's logprobs now)
        m.update(tis_m, **losses.mismatch(old if old is not engine_old else logp.detach(), engine_old, mask))
        if kl_mat is not None:  # exact full-vocabulary KL against the learner's frozen copy
            loss = loss + algo.beta * losses.agg_loss(kl_mat, mask, algo.loss_agg, norm_len=norm_len,
                                                      global_denominator=denom)
            m["kl_full"] = losses.masked_mean(kl_mat.detach(), mask).item()
        with torch.no_grad():
            valid = mask.sum().item()
            m["entropy"] = losses.masked_mean(entropy, mask).item()
            gap = (logp.detach() - engine_old).abs() * mask  # [b, T] engine vs learner now
            m["logprob_diff_max"] = gap.max().item()
            m["logprob_diff_mean"] = losses.masked_mean(gap, mask).item()
        work["tokens_forward"] += chunk_tokens(batch.prompt_ids[sl], batch.completion_ids[sl], shared, T)
        work["head_positions"] += valid  # the head runs on real completion tokens only
        work["micro_batches"] += 1
        return loss, m, valid

    # ---- DPO ------------------------------------------------------------------------------------
    def pair_micro_batches(self, batch: PreferenceBatch) -> list[list[int]]:
        """Pairs in micro-batches (lists of pair indices): a pair's two sequences always share a micro-batch (its
        loss needs both); at most micro_batch_size sequences (at least one pair) and max_tokens_per_micro_batch
        positions (a pair over the budget runs alone)."""
        cap = max(1, (self.micro_batch_size or 2 * len(batch.prompt_ids)) // 2)
        out: list[list[int]] = []
        for i in range(len(batch.prompt_ids)):
            cur = out[-1] if out else None
            if cur is not None and len(cur) < cap and (self.max_tokens is None or chunk_cost(
                    *_pair_rows(batch, cur + [i]), True) <= self.max_tokens):
                cur.append(i)
            else:
                out.append([i])
        return out

    def dpo_step(self, batch: PreferenceBatch, params: DPOParams, totals: tuple[int, int] | None = None) -> dict:
        """One optimizer step of the DPO loss, mean over the batch's P pairs (micro-batched by pairs). Metrics:
        loss, the implicit rewards beta * (pi - ref) of chosen and rejected, their margin, accuracy (the chosen
        reward above the rejected), the policy's logps of each."""
        P, tokens = totals or (len(batch.prompt_ids), batch.tokens())
        tokens = max(1, tokens)  # totals: the whole batch's pairs and completion tokens (learner workers)

        def loss_of(pairs: list[int]) -> tuple[torch.Tensor, dict, float]:
            prompts, completions = _pair_rows(batch, pairs)  # chosen, rejected, chosen, ... (shared prompt runs)
            logp, _, _, mask = self._run(_policy_pass, prompts, completions, self.pad_id, slice(0, len(prompts)), True,
                                         self.held.uniform, self.held.autocast)  # [2b, T]
            if batch.policy_masks is not None:  # multi-turn: the policy's tokens only
                rows = [batch.policy_masks[2 * i + s] for i in pairs for s in (0, 1)]
                mask = mask * from_ragged(rows, mask.shape[1]).to(mask)  # [2b, T]
            seq = (logp * mask).sum(-1)  # [2b] summed over each completion's (policy) tokens
            lens = mask.sum(-1)  # [2b]
            ref = torch.tensor([x for i in pairs for x in (batch.ref_chosen[i], batch.ref_rejected[i])],
                               dtype=seq.dtype, device=seq.device)  # [2b]
            losses, rc, rr = dpo_loss(seq[0::2], seq[1::2], ref[0::2], ref[1::2], params.beta, params.loss,
                                      params.label_smoothing, lens[0::2], lens[1::2])  # [b]
            with torch.no_grad():
                if batch.engine_logprobs is not None:  # the engine that sampled these pairs vs the learner now
                    rows = [batch.engine_logprobs[2 * i + s] for i in pairs for s in (0, 1)]
                    gap = (logp.detach() - from_ragged(rows, mask.shape[1]).to(logp.device)).abs() * mask  # [2b, T]
                    m_gap = {"logprob_diff_max": gap.max().item(), "logprob_diff_mean": gap.sum().item() * P / tokens}
                m = {"loss": losses.sum().item(), "rewards_chosen": rc.sum().item(),
                     "rewards_rejected": rr.sum().item(), "margin": (rc - rr).sum().item(),
                     "accuracy": (rc > rr).float().sum().item(), "logps_chosen": seq[0::2].sum().item(),
                     "logps_rejected": seq[1::2].sum().item(), **(m_gap if batch.engine_logprobs is not None else {})}
            return losses.sum() / P, m, 1.0  # metrics are sums here: over P below

        out = optim.accumulate(self.model, self.opt, self.sched, self.pair_micro_batches(batch), loss_of,
                               self.grad_clip, total_weight=float(P), dp=self.dp, dummy=self._dummy_loss)
        self.updates += 1
        return {f"dpo/{k}": v for k, v in out.items()}

    # ---- SFT ------------------------------------------------------------------------------------
    def sft_step(self, prompt_ids: list[list[int]], target_ids: list[list[int]], total: int | None = None,
                 target_masks: list[list[int]] | None = None) -> dict:
        """One optimizer step of token-mean cross-entropy on the targets (micro-batched, over the batch's target
        count). `target_masks` [B] like target_ids: 0 at tokens the policy does not write (a gold multi-turn trace's
        tool observations), left out of the loss and the count."""
        counted = [sum(m) for m in target_masks] if target_masks is not None else [len(t) for t in target_ids]
        total = float(total or sum(counted))  # total: the whole batch's targets (workers)
        order = length_order(prompt_ids, target_ids)
        prompt_ids, target_ids = [prompt_ids[i] for i in order], [target_ids[i] for i in order]
        masks = [target_masks[i] for i in order] if target_masks is not None else None

        def nll(chunk: tuple[slice, bool]) -> tuple[torch.Tensor, dict, float]:
            logp, _, _, mask = self._run(_policy_pass, prompt_ids, target_ids, self.pad_id, *chunk,
                                         self.held.uniform, self.held.autocast)  # [b, T]
            if masks is not None:
                mask = mask * from_ragged(masks[chunk[0]], mask.shape[1]).to(mask.device)  # [b, T]
            loss = losses.agg_loss(-logp, mask, "token-mean", global_denominator=total)
            return loss, {"loss": loss.item()}, 1.0  # weight 1: the batch's loss is the sum of the terms

        m = optim.accumulate(self.model, self.opt, self.sched, self.micro_batches(prompt_ids, target_ids), nll,
                             self.grad_clip, dp=self.dp, dummy=self._dummy_loss)
        return {f"sft/{k}": v for k, v in m.items()}

    def reset_optimizer(self, lr: float, total_steps: int, warmup_ratio: float, schedule: str,
                        weight_decay: float = 0.0) -> None:
        self.opt_args = (lr, total_steps, warmup_ratio, schedule, weight_decay)
        self.opt, self.sched = optim.make_optimizer(lora_lib.trainable(self.model), self.optimizer, lr, total_steps,
                                                    warmup_ratio, schedule, weight_decay)

    def set_full_reference(self, source: str | None) -> None:
        """The frozen copy that kl_kind=full compares against: 'current' (this policy's weights now), a model
        folder, or None (no full KL in this phase)."""
        self.full_ref = None if source is None else self.held.frozen_copy(source)  # sharded: refused (and by the
        # config, before any actor starts)

    # ---- LoRA: the reference is the model with its adapters disabled ---------------------------
    def ref_logprobs(self, prompt_ids, completion_ids) -> list[list[float]]:
        if self.lora is None:
            raise RuntimeError("the learner serves reference logprobs only with LoRA; use the reference actor")
        with self.model.disable_adapter():
            return self.logprobs(prompt_ids, completion_ids)

    def start_phase_reference(self) -> None:
        """LoRA: fold the adapters into the base weights and start fresh ones, so that the adapters-disabled
        model (the reference) is the model this phase starts from."""
        lora_lib.merge_and_reset(self.model)

    # ---- weights and checkpoints ----------------------------------------------------------------
    def probe_sequence(self, n: int = 48) -> tuple[list[int], list[int]]:
        """(prompt, completion) for the weight-sync check (cluster/sync_check.py): a fixed request and this policy's
        own greedy continuation of `n` tokens (end of text suppressed), tokens the model finds likely, where
        rounding moves logprobs least."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": PROBE_REQUEST}], add_generation_prompt=True,
                                           tokenize=False)
            prompt = tok.encode(text, add_special_tokens=False)
        else:
            prompt = tok.encode(PROBE_REQUEST)
        ids = torch.tensor([prompt], device=self.device)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.held.autocast):
            out = self._run(_greedy, ids, n, self.pad_id)  # sharded: every worker at once (learner/fsdp.py)
        seq2seq = getattr(self.model.config, "is_encoder_decoder", False)
        completion = out[0, 1:] if seq2seq else out[0, len(prompt):]  # seq2seq: after the decoder start token
        return list(prompt), completion.tolist()[:n]

    def logprobs(self, prompt_ids, completion_ids) -> list[list[float]]:
        """Every completion token's logprob (no grad); sharded, every worker calls it with the same rows."""
        return sequence_logprobs(self.model, prompt_ids, completion_ids, self.pad_id,
                                 self.micro_batch_size, self.held.autocast, self.max_tokens, run=self._run)

    def state(self) -> dict[str, torch.Tensor]:
        """The plain model's weights (with LoRA: the adapters merged in), under the plain model's names (a whole
        model's)."""
        return self.held.state()

    def state_bytes(self) -> dict[str, int]:
        """What this worker keeps between steps, by kind: parameters, gradients, optimizer state (its shards)."""
        return self.held.state_bytes(self.opt)

    def free_cache(self) -> None:
        self.held.free_cache()

    # ---- collective weight sync (common/collective.py): rank 0 of a group with every engine ----------------
    def init_sync_group(self, host: str, port: int, world_size: int, backend: str) -> None:
        from common.collective import SyncGroup

        self.sync_group = SyncGroup(host, port, world_size, 0, backend)

    # A weight sync sends the whole state. A tied lm_head goes too, though it is the embedding: vLLM's CPU backend
    # keeps a repacked copy of the head that a reload of the embedding alone leaves stale (tried: the probe check
    # caught a 0.02 gap after the first update).
    def weights_meta(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, dtype) of what broadcast_weights sends, in order (a shard's whole shape)."""
        return self.held.weights_meta()

    def broadcast_weights(self) -> None:
        """Rank 0 of the weight-sync group sends every tensor, a bucket at a time (sharded: every learner worker
        calls it; learner/holder.py)."""
        def put(v: torch.Tensor) -> None:  # the writer's only: the other sharded workers have no sync group
            g = self.sync_group
            g.broadcast(v.detach().to(g.device).contiguous(), src=0)

        self.held.send(put)

    def named_arrays(self) -> list[tuple[str, np.ndarray]] | None:
        """Weights as numpy arrays: one ray.put, zero-copy reads on every engine of the node. Sharded, every worker
        calls it and worker 0 returns the whole weights (the others None): a phase start's handoff to the reference
        or the critic; a weight sync goes bucket by bucket (`bucket_arrays`)."""
        out = [x for i in range(len(self.weight_buckets())) for x in (self.bucket_arrays(i) or [])]
        return out if self.held.writer else None

    def weight_buckets(self) -> list[list[str]]:
        """The weights' names in the buckets a sync sends one at a time (one bucket of every name when whole)."""
        return self.held.buckets()

    def bucket_arrays(self, i: int) -> list[tuple[str, np.ndarray]] | None:
        """Bucket `i`'s whole weights as numpy arrays, on worker 0 (sharded: every worker calls it; the others get
        None)."""
        return self.held.bucket_arrays(i)

    def save(self, path: str, with_optimizer: bool = True) -> None:
        """The checkpoint: an HF folder of the policy (LoRA merged; the adapters apart in trainer/ for resuming) and
        beside it trainer_state.pt (the optimizer as the holder keeps it, the schedule, update count, random
        states)."""
        from pathlib import Path

        path = Path(path)
        self.held.save_model(path)
        if self.held.writer:
            self.tokenizer.save_pretrained(path)
        if self.lora is not None and with_optimizer:
            from safetensors.torch import save_file

            # in trainer/: vLLM loads every *.safetensors at a model folder's top level
            (path / TRAINER_DIR).mkdir(parents=True, exist_ok=True)
            save_file(untied(self.model.state_dict()), str(path / TRAINER_DIR / "lora_state.safetensors"))
        if with_optimizer:
            kept = self.held.save_training(self.opt, path / TRAINER_DIR / "dcp")
            if self.held.writer:
                torch.save({**kept, "scheduler": self.sched.state_dict(), "updates": self.updates,
                            "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(),
                            "np_rng": np_state_to_torch(np.random.get_state())}, path / "trainer_state.pt")

    def load_trainer_state(self, path: str) -> None:
        from pathlib import Path

        path = Path(path)
        st = torch.load(path / "trainer_state.pt", weights_only=True)  # plain tensors and numbers only
        # base weights (the phase's reference) and adapters as they were with LoRA; the policy's weights else
        weights = path / TRAINER_DIR / "lora_state.safetensors" if self.lora is not None else path / "model.safetensors"
        self.held.load_training(self.opt, st, path / TRAINER_DIR / "dcp", weights, str(path))
        self._restore(st)

    def _restore(self, st: dict) -> None:
        """The schedule, update count and random states of a trainer_state.pt."""
        self.sched.load_state_dict(st["scheduler"])
        self.updates = st["updates"]
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["py_rng"])
        np.random.set_state(np_state_from_torch(st["np_rng"]))


def _policy_pass(model, prompt_ids, completion_ids, pad_id: int, sl: slice, shared: bool, uniform: bool,
                 autocast: bool, entropy: bool = False, full_ref=None):
    """One micro-batch through `model` (one root forward of a sharded model): (logp, entropy or None, the exact KL
    against `full_ref` or None, mask), each [b, T]; learner/logprobs.py does the work."""
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        hidden, head, tgt, mask = chunk_hidden(model, prompt_ids, completion_ids, pad_id, sl, shared, uniform)
        ref_pair = None
        if full_ref is not None:  # the frozen copy's head and hidden states: the full KL's other side
            with torch.no_grad():
                ref_hidden, ref_head, _, _ = chunk_hidden(full_ref, prompt_ids, completion_ids, pad_id, sl, shared)
            ref_pair = (ref_head, ref_hidden)
        logp, ent, kl = head_logprobs(head, hidden, tgt, mask, entropy=entropy, ref=ref_pair)  # [b, T]
    return logp, ent, kl, mask


def _greedy(model, ids, n: int, pad_id: int):
    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, pad_token_id=pad_id)


def np_state_to_torch(state: tuple) -> tuple:
    """numpy's RNG state with its key array as a tensor, so that trainer_state.pt loads with weights_only=True."""
    name, keys, pos, has_gauss, gauss = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)


def np_state_from_torch(state: tuple) -> tuple:
    name, keys, pos, has_gauss, gauss = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss
