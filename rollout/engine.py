"""Rollout engines: K samples per prompt with the sampled tokens' logprobs, and weight reloads.

`VLLMEngine` runs vLLM in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) so it can live inside a Ray
actor and receive weights without another process hop. `HFEngine` is the same interface over
transformers `generate`, for models vLLM cannot serve (seq2seq such as flan-t5).

Logprobs are vLLM's raw logprobs: log softmax of the logits at temperature 1, before top-p. The
learner computes the same quantity, so after a weight sync the two must agree to ~1e-5 in fp32;
the job logs that gap every step as proof that the sync took effect.
"""
from __future__ import annotations

import os
from typing import Iterable

from common.precision import VLLM_DTYPE
from common.types import Rollout


class StaleWeights(RuntimeError):
    """The engine does not hold the weights version the caller expects (it was restarted since the last sync)."""


def _init_sync(worker, host, port, world_size, rank, backend):
    """Runs on each vLLM worker of the engine: join the learner's weight-sync group (common/collective.py) as rank
    `rank` + its tensor-parallel rank (the engine's ranks are consecutive; each shard receives every tensor and
    its reload keeps its slice)."""
    from common.collective import SyncGroup

    worker.raygrpo_sync = SyncGroup(host, port, world_size, rank + getattr(worker, "rank", 0), backend)


def _receive_reload(worker, meta):
    """Runs on the vLLM worker: receive the learner's broadcast tensor by tensor, straight into the in-place
    reload (no copy through the object store)."""
    from common.collective import receive

    worker.model_runner.reload_weights(weights_iterator=receive(worker.raygrpo_sync, meta))
    return True


class Engine:
    """What every rollout engine serves (VLLMEngine, HFEngine); the system calls these by method object
    (`group.call_all(Engine.probe_logprobs, ...)`). `weights_version`: the caller's (fleet run, count of syncs) pair.
    An engine that does not hold that version (one Ray restarted came back with the weights it was built from) raises
    StaleWeights instead of sampling from another policy."""
    weights_version = 0  # syncs of the current run; 0: its initial weights
    run = 0  # the fleet's run these weights belong to (cluster/fleet.py); 0: the weights the engine was built from
    built_from = None  # the folder the engine was built from
    choice = None  # what `dtype` resolved to on this engine's node ('auto' -> common/precision.py)

    @property
    def tag(self) -> tuple[int, int]:
        return (self.run, self.weights_version)

    def _hold(self, version) -> None:
        """The weights just loaded are `version`: a (run, sync) pair, or None for one sync more of this run."""
        if version is None:
            self.weights_version += 1
        elif isinstance(version, tuple):
            self.run, self.weights_version = version
        else:
            self.weights_version = version

    def reset(self, model_path: str, run: int) -> None:
        """A fleet's next run (cluster/fleet.py): its initial weights from `model_path` (not read again where the
        engine still holds the weights it was built from that folder), the prefix cache dropped, version 0 of `run`."""
        if self.sleeping:
            self.wake(["weights", "kv_cache"])
        if not (self.tag == (0, 0) and model_path == self.built_from):
            self.load_folder(model_path)
        self.run, self.weights_version = run, 0
        self.after_load()

    def load_folder(self, model_path: str) -> None:
        """The weights of a model folder (or hub id) of the served architecture, in place."""
        self.update_weights(folder_weights(model_path), (self.run, self.weights_version))

    def after_load(self) -> None:
        """Whatever the engine computed with its old weights is dropped."""

    def generate(self, prompt_ids: list[list[int]], n: int, temperature: float, top_p: float,
                 max_new_tokens: int, seed: int, stop: list[str] | None = None,
                 weights_version: int | None = None) -> Rollout:
        """n samples per prompt (group-contiguous); `stop`: strings that end a sample, kept at its end (a tool
        call's closing tag, rollout/turns.py); temperature 0: greedy."""
        raise NotImplementedError

    def greedy(self, prompt_ids: list[list[int]], max_new_tokens: int,
               weights_version: int | None = None) -> list[str]:
        raise NotImplementedError

    def serve(self, prompt_ids: list[list[int]], params: list, weights_version=None) -> list:
        raise NotImplementedError(f"{type(self).__name__} serves no endpoint requests (rollout.agent needs "
                                  "rollout.engine=vllm)")

    def update_weights(self, named_tensors: Iterable, version: int | None = None) -> None:
        raise NotImplementedError

    def init_sync_group(self, host: str, port: int, world_size: int, rank: int, backend: str) -> None:
        raise NotImplementedError

    def receive_weights(self, meta, version: int | None = None) -> None:
        raise NotImplementedError

    def probe_logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        raise NotImplementedError

    def sleep(self, level: int) -> None:
        """Give the GPU memory back between generations (cluster/sleep.py); vLLM on a GPU only."""
        raise NotImplementedError(f"{type(self).__name__} has no sleep mode (vLLM on a GPU has: rollout.sleep)")

    def wake(self, tags: list[str]) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no sleep mode")

    @property
    def precision(self) -> str:
        return self.choice.precision

    def precision_choice(self) -> dict:
        return self.choice.as_dict()

    sleeping = False  # cluster/sleep.py: asleep between a generation and the next weight sync

    def _check(self, expected) -> None:
        if self.sleeping:
            raise RuntimeError("the engine is asleep (rollout.sleep) and was asked to sample: the system wakes it "
                               "with the next weight sync (cluster/sleep.py EngineSleep.ensure_awake)")
        held = self.tag if isinstance(expected, tuple) else self.weights_version
        if expected is not None and expected != held:
            raise StaleWeights(f"engine holds weights version {held}, the caller expects {expected} "
                               "(restarted since the last sync?)")


def folder_weights(model_path: str):
    """(name, tensor) of every safetensors file of a model folder (a hub id: its downloaded snapshot), one at a time."""
    from pathlib import Path

    from safetensors import safe_open

    folder = Path(model_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model_path, allow_patterns=["*.safetensors", "*.json"]))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no *.safetensors weights (an engine reloads weights only from "
                                "safetensors; save the model with save_pretrained)")
    head, embedding = False, None
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                head = head or name.endswith("lm_head.weight")
                if name.endswith(("embed_tokens.weight", "wte.weight")):
                    embedding = (name, st.get_tensor(name))
                yield name, st.get_tensor(name)
    if not head and embedding is not None and _ties_embeddings(folder):
        # a tied head is saved once, as the embedding; vLLM's CPU backend holds a repacked copy of the head that a
        # reload of the embedding alone leaves as it was (learner/policy.py sends it with every sync for that reason)
        yield "lm_head.weight", embedding[1]


def _ties_embeddings(folder) -> bool:
    from transformers import AutoConfig

    from common.models import trust_remote_code

    return bool(getattr(AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code()),
                        "tie_word_embeddings", False))


def _decide_dtype(dtype: str, config):
    """'auto' | 'fp32' | 'bf16' -> the Choice for this model on this engine's device (common/precision.py)."""
    from common.device import device_for
    from common.precision import decide, model_dims

    return decide(dtype, device_for(), model_dims(config))


def _reload(worker, named_arrays):
    """Runs on the vLLM worker: in-place reload from (name, array) pairs (numpy or torch)."""
    import warnings

    import numpy as np
    import torch

    def tensors():
        # Arrays from the object store are read-only views; reload copies them into the engine's params.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            for name, arr in named_arrays:
                yield name, torch.from_numpy(arr) if isinstance(arr, np.ndarray) else arr

    worker.model_runner.reload_weights(weights_iterator=tensors())
    return True


class VLLMEngine(Engine):
    def __init__(self, model_path: str, max_model_len: int = 2048, kv_cache_gib: float = 2.0,
                 dtype: str = "fp32", seed: int = 0, gpu_memory_utilization: float = 0.5,
                 enforce_eager: bool = True, tensor_parallel_size: int = 1, sleep_mode: bool = False):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(max(1, round(kv_cache_gib)))))
        from transformers import AutoConfig
        from vllm import LLM

        from common.models import trust_remote_code

        self.choice = _decide_dtype(dtype, AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code()))

        # Chunked prefill off: with it, a batch large enough to split a prompt's prefill across steps makes
        # vLLM rewind the per-request seeded generator of the discarded token, which a CPU generator cannot
        # do ("CPU Generator does not use offset"; vLLM 0.32 gpu_model_runner._bookkeeping_sync). Whole-prompt
        # prefill never discards a sampled token. Found by a 200-question x 5-sample eval.
        self.llm = LLM(model=model_path, dtype=VLLM_DTYPE[self.precision], enforce_eager=enforce_eager, trust_remote_code=trust_remote_code(),
                       max_model_len=max_model_len, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization,
                       enable_chunked_prefill=False, max_num_batched_tokens=max(max_model_len, 8192),
                       # tensor parallel: vLLM's workers as processes of this actor, on the GPUs of its bundle
                       tensor_parallel_size=tensor_parallel_size,
                       distributed_executor_backend="mp" if tensor_parallel_size > 1 else None,
                       **({"enable_sleep_mode": True} if sleep_mode else {}))  # one GPU with the learner
        self.tensor_parallel_size = tensor_parallel_size
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = max_model_len
        self.built_from = model_path

    def after_load(self) -> None:
        self.llm.reset_prefix_cache()  # cached prefix KV was computed with the old weights

    def _prompts(self, prompt_ids: list[list[int]]):
        from vllm.inputs import TokensPrompt

        return [TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids]

    def generate(self, prompt_ids, n, temperature, top_p, max_new_tokens, seed, stop=None,
                 weights_version=None) -> Rollout:
        self._check(weights_version)
        from vllm import SamplingParams

        ends = dict(stop=list(stop), include_stop_str_in_output=True) if stop else {}
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                 logprobs=0, seed=seed + i, **ends) for i in range(len(prompt_ids))]
        outs = self.llm.generate(self._prompts(prompt_ids), params, use_tqdm=False)
        p_ids, c_ids, lps, texts, reasons = [], [], [], [], []
        for prompt, out in zip(prompt_ids, outs):
            for comp in out.outputs:
                ids = list(comp.token_ids)
                # logprobs=0 returns just the sampled token's entry at each position.
                lp = [step[tok].logprob for step, tok in zip(comp.logprobs, ids)]
                p_ids.append(list(prompt))
                c_ids.append(ids)
                lps.append(lp)
                texts.append(comp.text)
                reasons.append(comp.finish_reason or "length")
        return Rollout(p_ids, c_ids, lps, texts, reasons, group_size=n)

    def serve(self, prompt_ids: list[list[int]], params: list, weights_version=None) -> list:
        """The endpoint's requests (rollout/endpoint.py) that arrived together, one batch: each prompt's ids with
        the vLLM SamplingParams its request made; vLLM's RequestOutput each, its sampled tokens' logprobs always
        there (the learner trains on them) whether or not the client asked for logprobs."""
        self._check(weights_version)
        from vllm.sampling_params import RequestOutputKind

        for p in params:
            p.output_kind = RequestOutputKind.FINAL_ONLY  # one answer per request (a stream gets it as one chunk)
            p.logprobs = 0 if p.logprobs is None else p.logprobs
        return self.llm.generate(self._prompts(prompt_ids), list(params), use_tqdm=False)

    def greedy(self, prompt_ids, max_new_tokens, weights_version=None) -> list[str]:
        self._check(weights_version)
        from vllm import SamplingParams

        params = SamplingParams(n=1, temperature=0.0, max_tokens=max_new_tokens)
        outs = self.llm.generate(self._prompts(prompt_ids), params, use_tqdm=False)
        return [o.outputs[0].text for o in outs]

    def sleep(self, level: int) -> None:
        self.llm.sleep(level=level)
        self.sleeping = True

    def wake(self, tags: list[str]) -> None:
        """Wake `tags` ("weights", "kv_cache"); awake once the KV cache is back, whose prefix entries were computed
        with the old weights and are dropped. An engine that is awake (restarted by Ray) ignores it."""
        if not self.sleeping:
            return
        self.llm.wake_up(tags=tags)
        if "kv_cache" in tags:
            self.sleeping = False
            self.llm.reset_prefix_cache()

    def update_weights(self, named_tensors, version=None) -> None:
        self.llm.collective_rpc(_reload, args=(list(named_tensors),))
        self._hold(version)
        # Cached prefix KV was computed with the old weights; reusing it would mix two policies.
        self.llm.reset_prefix_cache()

    def init_sync_group(self, host: str, port: int, world_size: int, rank: int, backend: str) -> None:
        self.llm.collective_rpc(_init_sync, args=(host, port, world_size, rank, backend))

    def receive_weights(self, meta, version=None) -> None:
        """The other end of Learner.broadcast_weights (cluster.weight_sync=collective)."""
        self.llm.collective_rpc(_receive_reload, args=(meta,))
        self.llm.reset_prefix_cache()
        self._hold(version)

    def probe_logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        """Logprobs of `completion_ids` after `prompt_ids` under the served weights (prompt logprobs of one
        request): the sync check compares them with the learner's. A check of behaviour, not of tensors, since
        vLLM's CPU backend repacks linear weights into oneDNN handles that no tensor sum can read."""
        from vllm import SamplingParams

        out = self.llm.generate(self._prompts([list(prompt_ids) + list(completion_ids)]),
                                SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0), use_tqdm=False)[0]
        steps = out.prompt_logprobs[len(prompt_ids):]
        return [step[tok].logprob for step, tok in zip(steps, completion_ids)]


class HFEngine(Engine):
    """transformers `generate` behind the same interface (causal LMs and seq2seq)."""

    def __init__(self, model_path: str, seed: int = 0, dtype: str = "fp32"):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        from common.device import pick_device
        from common.models import disable_dropout, load_tokenizer, trust_remote_code

        cfg = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code())
        self.seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
        cls = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        self.device = pick_device()  # this actor's GPU when Ray gave it one
        self.choice = _decide_dtype(dtype, cfg)
        self.model = cls.from_pretrained(model_path, dtype=getattr(torch, VLLM_DTYPE[self.precision]),
                                         trust_remote_code=trust_remote_code()).to(self.device)
        disable_dropout(self.model)
        self.tokenizer = load_tokenizer(model_path)
        self.seed = seed
        self.built_from = model_path

    def _batch(self, prompt_ids):
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompt_ids)
        # Left padding so every prompt ends where generation starts.
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompt_ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=self.device)
        return ids, mask, width

    def _run(self, prompt_ids, n, max_new_tokens, **sampling):
        import torch

        ids, mask, width = self._batch(prompt_ids)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      num_return_sequences=n, output_scores=True, output_logits=True,
                                      return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id,
                                      **sampling)
        start = 1 if self.seq2seq else width  # seq2seq outputs start with the decoder start token
        new = out.sequences[:, start:]  # [B, T]
        logits = torch.stack(out.logits, dim=1).float()  # [B, T, V] raw (temperature-1) logits
        logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)  # [B, T]
        return new.cpu(), logp.cpu()

    def _trim(self, ids_row, lp_row):
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        ids, lps, reason = [], [], "length"
        for tok, lp in zip(ids_row.tolist(), lp_row.tolist()):
            ids.append(tok)
            lps.append(lp)
            if tok == eos or (self.seq2seq and tok == pad):
                reason = "stop"
                break
        return ids, lps, reason

    def generate(self, prompt_ids, n, temperature, top_p, max_new_tokens, seed, stop=None,
                 weights_version=None) -> Rollout:
        self._check(weights_version)
        if stop:
            raise ValueError("multi-turn rollouts (rollout.max_turns > 1) stop at tool calls, which the hf engine "
                             "does not do; use rollout.engine=vllm")
        import torch

        torch.manual_seed(seed)  # seeds the CUDA generators too
        new, logp = self._run(prompt_ids, n, max_new_tokens, do_sample=True, temperature=temperature,
                              top_p=top_p, top_k=0)
        p_ids, c_ids, lps, texts, reasons = [], [], [], [], []
        for row in range(new.shape[0]):
            ids, lp, reason = self._trim(new[row], logp[row])
            p_ids.append(list(prompt_ids[row // n]))
            c_ids.append(ids)
            lps.append(lp)
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
            reasons.append(reason)
        return Rollout(p_ids, c_ids, lps, texts, reasons, group_size=n)

    def greedy(self, prompt_ids, max_new_tokens, weights_version=None) -> list[str]:
        self._check(weights_version)
        new, logp = self._run(prompt_ids, 1, max_new_tokens, do_sample=False)
        return [self.tokenizer.decode(self._trim(new[r], logp[r])[0], skip_special_tokens=True)
                for r in range(new.shape[0])]

    def update_weights(self, named_tensors, version=None) -> None:
        import numpy as np
        import torch

        sd = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in named_tensors}
        missing, unexpected = self.model.load_state_dict(sd, strict=False)
        if unexpected:
            raise ValueError(f"weights do not match the rollout model: unexpected {unexpected[:5]}")
        self._hold(version)

    def init_sync_group(self, host: str, port: int, world_size: int, rank: int, backend: str) -> None:
        from common.collective import SyncGroup

        self.sync_group = SyncGroup(host, port, world_size, rank, backend)

    def receive_weights(self, meta, version=None) -> None:
        from common.collective import receive

        self.update_weights(list(receive(self.sync_group, meta)), version)

    def probe_logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        import torch

        with torch.no_grad():
            if self.seq2seq:
                start = self.model.config.decoder_start_token_id
                logits = self.model(input_ids=torch.tensor([list(prompt_ids)], device=self.device),
                                    decoder_input_ids=torch.tensor([[start, *completion_ids[:-1]]],
                                                                   device=self.device)).logits[0]
            else:
                ids = torch.tensor([list(prompt_ids) + list(completion_ids)], device=self.device)
                logits = self.model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1]
        lp = torch.log_softmax(logits.float().cpu(), dim=-1)
        return lp[torch.arange(len(completion_ids)), torch.tensor(completion_ids)].tolist()

