"""The PPO critic: a value model (a causal LM body with a scalar head) and its optimizer, as a plain class.

V at completion token t is read from the hidden state that predicts token t (position len(prompt) - 1 + t),
i.e. the value of the state before the token is emitted; GAE (learner/advantages.py) takes it from there.
By default the critic starts each PPO phase as the policy's body at that moment with a fresh head (OpenRLHF
and verl start it from the reward model or the SFT model); any HF causal LM folder can be given instead.
"""
from __future__ import annotations

import torch

from common.checkpoint import TRAINER_DIR
from common.models import load_tokenizer
from learner import losses, optim
from learner.holder import hold
from learner.logprobs import body_and_head, chunks, from_ragged, pad_batch, to_ragged
from learner.policy import set_threads, token_budget


class ValueModel(torch.nn.Module):
    def __init__(self, lm, seed: int = 0):
        super().__init__()
        if getattr(lm.config, "is_encoder_decoder", False):
            raise ValueError("the PPO critic needs a causal LM; an encoder-decoder policy (flan-t5) trains with "
                             "grpo, or give a causal LM folder as the ppo phase's critic")
        self.lm = lm  # its body is used; its LM head (tied to the embeddings here) never runs
        hidden = lm.config.hidden_size
        self.head = torch.nn.Linear(hidden, 1)
        self.reset_head(seed)

    def reset_head(self, seed: int) -> None:
        from learner.fsdp import assign

        g = torch.Generator().manual_seed(seed)  # OpenRLHF's value head init: N(0, 1 / (H + 1)), bias 0
        assign(self.head.weight, torch.randn(self.head.weight.shape, generator=g) / (self.head.in_features + 1))
        assign(self.head.bias, torch.zeros(self.head.bias.shape))  # a shard's part of the same values

    def forward(self, input_ids, attn, positions) -> torch.Tensor:
        """[B, L] ids and mask, [B, T] positions -> [B, T] values."""
        body, _ = body_and_head(self.lm)
        hidden = body(input_ids=input_ids, attention_mask=attn).last_hidden_state  # [B, L, H]
        idx = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # [B, T, H]
        return self.head(torch.gather(hidden, 1, idx)).squeeze(-1)  # [B, T]


def _value_pass(model, ids, attn, pos, autocast: bool) -> torch.Tensor:
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
        return model(ids, attn, pos).float()  # [b, T]


class Critic:
    def __init__(self, model_path: str, lr: float = 1e-5, total_steps: int = 1, warmup_ratio: float = 0.0,
                 schedule: str = "constant", grad_clip: float = 1.0, micro_batch_size: int = 4,
                 threads: int | None = None, seed: int = 0, precision: str = "fp32",
                 max_tokens_per_micro_batch: int | str | None = None, sharding: str = "replicate",
                 offload: bool = False):
        set_threads(threads)
        self.seed = seed
        # the value model over a holder (learner/holder.py): sharded, its shards arrive at init_data_parallel, the
        # head (in no checkpoint) drawn again then
        self.held = hold(model_path, sharding=sharding, offload=offload, precision=precision,
                         wrap=lambda lm: ValueModel(lm, seed), fresh=lambda model: model.reset_head(seed))
        self.device, self.choice = self.held.device, self.held.choice  # the precision as the learner's
        self.pad_id = load_tokenizer(model_path).pad_token_id
        self.micro_batch_size, self.grad_clip = micro_batch_size, grad_clip
        self.max_tokens = token_budget(max_tokens_per_micro_batch, self.device.type)
        self.reset_optimizer(lr, total_steps, warmup_ratio, schedule)

    @property
    def model(self) -> ValueModel:
        return self.held.model

    @property
    def dp(self):
        return self.held.dp

    def init_data_parallel(self, host: str, port: int, world_size: int, rank: int, backend: str) -> None:
        """Join the critic workers' group (every worker at once); replicated, they stay identical, as the
        learner's; sharded, each holds its part of the value model and its optimizer state."""
        if self.held.join(host, port, world_size, rank, backend):
            self.reset_optimizer(*self.opt_args)

    def reset_optimizer(self, lr: float, total_steps: int, warmup_ratio: float, schedule: str) -> None:
        self.opt_args = (lr, total_steps, warmup_ratio, schedule)
        self.opt, self.sched = optim.make_optimizer(self.model.parameters(), "adamw", lr, total_steps, warmup_ratio,
                                                    schedule)

    def start_from(self, named_arrays=None, model_path: str | None = None) -> None:
        """A phase's critic: the policy's weights now (named_arrays) or a model folder, with a fresh head (the
        optimizer is made again after it: cluster/system.py)."""
        if model_path is not None:
            self.held.load_folder(model_path)
        else:
            self.held.load(named_arrays)
        self.model.reset_head(self.seed)

    def precision_choice(self) -> dict:
        return self.choice.as_dict()

    def _values(self, ids, attn, pos) -> torch.Tensor:
        return self.held.run(_value_pass, ids, attn, pos, self.held.autocast)  # [b, T]

    def _dummy_loss(self) -> torch.Tensor:
        """A sharded worker with fewer micro-batches than the others: a one-row pass worth 0."""
        ids = torch.full((1, 2), self.pad_id, dtype=torch.long, device=self.device)
        return self._values(ids, torch.ones_like(ids), torch.zeros((1, 1), dtype=torch.long, device=self.device)).sum() * 0.0

    def _batches(self, prompt_ids, completion_ids):
        for sl, _ in chunks(prompt_ids, self.micro_batch_size, completion_ids, self.max_tokens, share=False):
            ids, attn, pos, _, mask = (t.to(self.device) for t in
                                       pad_batch(prompt_ids[sl], completion_ids[sl], self.pad_id))
            yield sl, ids, attn, pos, mask

    @torch.no_grad()
    def values(self, prompt_ids, completion_ids) -> list[list[float]]:
        self.model.eval()
        out: list[list[float]] = []
        for _, ids, attn, pos, mask in self._batches(prompt_ids, completion_ids):
            out.extend(to_ragged(self._values(ids, attn, pos), mask))
        return out

    def train_values(self, prompt_ids, completion_ids, old_values, returns, value_masks: list[list[int]] | None,
                     clip_eps: float | None, total: int | None = None) -> dict:
        """One optimizer step of the clipped value loss, token-mean over the whole batch (micro-batched).
        `value_masks` [B] like completion_ids (multi-turn: 0 at tool observations, whose values are not the
        policy's states to judge) or None (every completion token). With critic workers the rows are this worker's
        share and `total` the whole batch's counted tokens."""
        total = float(total or (sum(map(sum, value_masks)) if value_masks else sum(len(c) for c in completion_ids)))

        def loss_of(chunk) -> tuple[torch.Tensor, dict, float]:
            sl, ids, attn, pos, mask = chunk
            T = mask.shape[1]
            if value_masks is not None:
                mask = mask * from_ragged(value_masks[sl], T).to(mask)  # [b, T] the policy's tokens only
            v = self._values(ids, attn, pos)  # [b, T]
            old = from_ragged(old_values[sl], T).to(self.device)  # [b, T]
            ret = from_ragged(returns[sl], T).to(self.device)  # [b, T]
            loss, m = losses.value_loss(v, old, ret, mask, clip_eps)
            del m["explained_var"]  # a chunk's, which does not average into the batch's
            share = mask.sum().item() / total  # token-mean of the batch = sum of chunk means x their shares
            return loss * share, m, share

        return optim.accumulate(self.model, self.opt, self.sched, self._batches(prompt_ids, completion_ids), loss_of,
                                self.grad_clip, dp=self.dp, dummy=self._dummy_loss)

    def save(self, path: str) -> None:
        """The value model whole in trainer/critic.safetensors (for reading; in trainer/: a checkpoint's top level is a
        model folder, and vLLM loads every *.safetensors there) and its optimizer and schedule in
        trainer/critic_optimizer.pt (sharded: each worker's part of weights and optimizer state in critic_dcp)."""
        from pathlib import Path

        from safetensors.torch import save_file

        folder = Path(path) / TRAINER_DIR
        folder.mkdir(parents=True, exist_ok=True)
        kept = self.held.save_training(self.opt, folder / "critic_dcp")
        whole = self.held.whole_state()  # gathered by every worker, written by worker 0
        if self.held.writer:
            save_file(whole, str(folder / "critic.safetensors"))
            torch.save({**kept, "scheduler": self.sched.state_dict()}, folder / "critic_optimizer.pt")

    def load(self, path: str) -> None:
        from pathlib import Path

        folder = Path(path) / TRAINER_DIR
        st = torch.load(folder / "critic_optimizer.pt", weights_only=True)
        st.setdefault("sharded", (folder / "critic_dcp").is_dir())  # checkpoints before the flag was written
        self.held.load_training(self.opt, st, folder / "critic_dcp", folder / "critic.safetensors", f"{path}'s critic")
        self.sched.load_state_dict(st["scheduler"])
