"""Data that crosses an actor boundary, and the one glossary of names and shapes.

Glossary
  P   prompts in a step;  G = group_size samples per prompt;  B = P * G sequences
  T   completion tokens (padded to the longest completion in the batch);  V vocabulary
  prompt_ids       [B] lists of token ids (the rendered chat prompt, repeated for each sample)
  completion_ids   [B] lists of sampled token ids (without padding)
  old_logprobs     [B] lists: log pi_sample(token) from the engine that sampled, at temperature 1
  logprobs         current policy (learner), ref_logprobs: frozen reference; both [B, T] tensors
  completion_mask  [B, T] 1.0 on real completion tokens
  policy_mask      [B] lists like completion_ids: 1 where the policy sampled the token, 0 where a tool's observation
                   was appended (multi-turn rollouts); None = every completion token is the policy's. The loss, KL,
                   entropy and token counts use completion_mask * policy_mask (verl's response_mask)
  rewards [B], advantages [B] or [B, T]
Samples are group-contiguous: sample j of prompt i sits at index i * G + j.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rollout:
    prompt_ids: list[list[int]]        # [B]
    completion_ids: list[list[int]]    # [B]
    old_logprobs: list[list[float]]    # [B], same lengths as completion_ids
    texts: list[str]                   # [B] decoded completions
    finish_reasons: list[str]          # [B] "stop" | "length"
    group_size: int
    # multi-turn rollouts (rollout.max_turns > 1): old_logprobs hold 0.0 at observation tokens, which policy_mask marks
    policy_mask: list[list[int]] | None = None   # [B] like completion_ids; None: every token is the policy's
    turns: list[list[dict]] | None = None        # [B] the sample's turns: policy text, tool calls, observations
    # [B] like completion_ids: the weights version (syncs of the run) that sampled each token, -1 where the policy
    # sampled none (observations); None: not known (a bare engine group, jobs/eval.py)
    versions: list[list[int]] | None = None

    def __post_init__(self) -> None:
        n = len(self.prompt_ids)
        if not (len(self.completion_ids) == len(self.old_logprobs) == len(self.texts) == n):
            raise ValueError("Rollout fields must all have B entries")
        if n % self.group_size:
            raise ValueError(f"B={n} is not a multiple of group_size={self.group_size}")
        if self.policy_mask is not None and [len(m) for m in self.policy_mask] != [len(c) for c in self.completion_ids]:
            raise ValueError("Rollout.policy_mask must have one entry per completion token")
        if self.versions is not None and [len(v) for v in self.versions] != [len(c) for c in self.completion_ids]:
            raise ValueError("Rollout.versions must have one entry per completion token")

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_ids) // self.group_size

    def rows(self, picked: list[int]) -> list[int]:
        """The sample indices of these prompt groups (indices into the P groups), in that order."""
        return [g * self.group_size + j for g in picked for j in range(self.group_size)]

    def groups(self, picked: list[int]) -> "Rollout":
        """The samples of these prompt groups, in that order."""
        return self.take(self.rows(picked), self.group_size)

    def take(self, rows: list[int], group_size: int) -> "Rollout":
        """These samples, in this order, as a rollout of groups of `group_size`."""
        pick = lambda xs: None if xs is None else [xs[i] for i in rows]  # noqa: E731
        return Rollout(pick(self.prompt_ids), pick(self.completion_ids), pick(self.old_logprobs), pick(self.texts),
                       pick(self.finish_reasons), group_size, pick(self.policy_mask), pick(self.turns),
                       pick(self.versions))

    def masks(self) -> list[list[int]]:
        """[B] policy_mask, with every token the policy's where the rollout has none."""
        return self.policy_mask if self.policy_mask is not None else [[1] * len(c) for c in self.completion_ids]

    def policy_tokens(self) -> list[int]:
        """[B] how many completion tokens the policy sampled (observation tokens left out)."""
        return [sum(m) for m in self.masks()]

    def sampled_by(self, version: int) -> "Rollout":
        """This rollout with every token the policy sampled marked as sampled by weights `version` (the others -1):
        what one generation call under one version gives."""
        from dataclasses import replace

        return replace(self, versions=[[version if m else -1 for m in ms] for ms in self.masks()])

    def staleness(self, version: int) -> list[int]:
        """The staleness of every token the policy sampled, in learner updates behind `version` (flat)."""
        if self.versions is None:
            return []
        return [version - v for vs in self.versions for v in vs if v >= 0]

    @staticmethod
    def concat(parts: list["Rollout"]) -> "Rollout":
        g = parts[0].group_size
        multi = any(r.policy_mask is not None for r in parts)
        return Rollout(
            prompt_ids=[p for r in parts for p in r.prompt_ids],
            completion_ids=[c for r in parts for c in r.completion_ids],
            old_logprobs=[lp for r in parts for lp in r.old_logprobs],
            texts=[t for r in parts for t in r.texts],
            finish_reasons=[f for r in parts for f in r.finish_reasons],
            group_size=g,
            policy_mask=[m for r in parts for m in r.masks()] if multi else None,
            turns=[t for r in parts for t in (r.turns or [[] for _ in r.texts])] if multi else None,
            versions=([v for r in parts for v in (r.versions or [[-1] * len(c) for c in r.completion_ids])]
                      if any(r.versions is not None for r in parts) else None),
        )


@dataclass(frozen=True)
class ScoredRollout:
    rollout: Rollout
    rewards: list[float | None]               # [B]; None: no reward component scored the sample (a user's
                                              # function returned None, or skipped it after an error)
    components: dict[str, list[float | None]]  # name -> [B] (f1, em, length_penalty, ...)

    @property
    def scored(self) -> list[bool]:
        """[B] whether each sample has a reward (the others leave their group's statistics and the loss)."""
        return [r is not None for r in self.rewards]

    def groups(self, picked: list[int]) -> "ScoredRollout":
        """The scores of these prompt groups, with their rollout (see Rollout.groups)."""
        rows = self.rollout.rows(picked)
        return ScoredRollout(self.rollout.groups(picked), [self.rewards[i] for i in rows],
                             {k: [v[i] for i in rows] for k, v in self.components.items()})

    @staticmethod
    def concat(parts: list["ScoredRollout"]) -> "ScoredRollout":
        return ScoredRollout(Rollout.concat([p.rollout for p in parts]), [r for p in parts for r in p.rewards],
                             {k: [x for p in parts for x in p.components[k]] for k in parts[0].components})


@dataclass(frozen=True)
class TrainBatch:
    """What the learner consumes: token ids plus per-sample scalars; tensors are built learner-side."""
    prompt_ids: list[list[int]]        # [B]
    completion_ids: list[list[int]]    # [B]
    old_logprobs: list[list[float]]    # [B]
    ref_logprobs: list[list[float]]    # [B] (empty lists when beta == 0)
    advantages: list[float] | list[list[float]]  # [B] (GRPO) or ragged [B][T_i] per token (PPO)
    # [B] the learner's own logprobs before this batch's updates, when the caller has them (PPO: one pass for all
    # minibatches); the ratio's denominator then, with old_logprobs (the engine's) only in the TIS weights
    learner_old_logprobs: list[list[float]] | None = None
    policy_mask: list[list[int]] | None = None  # [B] like completion_ids (multi-turn); None: all the policy's

    def rows(self, idx: list[int]) -> "TrainBatch":
        """These rows, in this order (a learner worker's share)."""
        pick = lambda xs: [xs[i] for i in idx] if xs else xs  # noqa: E731
        return TrainBatch(pick(self.prompt_ids), pick(self.completion_ids), pick(self.old_logprobs),
                          pick(self.ref_logprobs), pick(self.advantages), pick(self.learner_old_logprobs),
                          pick(self.policy_mask))

    def policy_tokens(self) -> list[int]:
        """[B] the tokens of each row the loss counts (all of them, or the policy's where a mask says so)."""
        if self.policy_mask is None:
            return [len(c) for c in self.completion_ids]
        return [int(sum(m)) for m in self.policy_mask]


@dataclass(frozen=True)
class PreferenceBatch:
    """A DPO step's pairs: one prompt, the preferred and the other completion, and the frozen reference's
    log-probabilities of each completion (summed over its tokens)."""
    prompt_ids: list[list[int]]        # [P]
    chosen_ids: list[list[int]]        # [P] completion token ids (no padding)
    rejected_ids: list[list[int]]      # [P]
    ref_chosen: list[float]            # [P] sum of log pi_ref over the chosen completion's tokens
    ref_rejected: list[float]          # [P]
    # [2P] online pairs: the sampling engine's token logprobs of chosen, rejected, chosen, ... (the engine-vs-learner
    # gap is logged from them); None for pairs from a file
    engine_logprobs: list[list[float]] | None = None
    # [2P] multi-turn pairs, laid out like engine_logprobs: 1 at the policy's tokens, 0 at tool observations (the
    # sequence log-probabilities sum over the policy's tokens only); None: every completion token is the policy's
    policy_masks: list[list[int]] | None = None

    def __post_init__(self) -> None:
        n = len(self.prompt_ids)
        if not (len(self.chosen_ids) == len(self.rejected_ids) == len(self.ref_chosen) == len(self.ref_rejected) == n):
            raise ValueError("PreferenceBatch fields must all have P entries")

    def rows(self, idx: list[int]) -> "PreferenceBatch":
        """These pairs, in this order (a learner worker's share)."""
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        both = lambda xs: None if xs is None else [xs[2 * i + s] for i in idx for s in (0, 1)]  # noqa: E731
        return PreferenceBatch(pick(self.prompt_ids), pick(self.chosen_ids), pick(self.rejected_ids),
                               pick(self.ref_chosen), pick(self.ref_rejected), both(self.engine_logprobs),
                               both(self.policy_masks))

    def tokens(self) -> int:
        """The completion tokens the sequence log-probabilities sum over (the policy's, where masks say so)."""
        if self.policy_masks is not None:
            return sum(map(sum, self.policy_masks))
        return sum(len(c) for c in self.chosen_ids + self.rejected_ids)


@dataclass(frozen=True)
class DPOParams:
    """What the learner's preference loss needs of a DPO phase (learner/losses.py dpo_loss)."""
    beta: float = 0.1
    loss: str = "sigmoid"              # sigmoid | ipo
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class Sampling:
    """How a phase samples: G completions per prompt at this temperature / top-p, at most this many tokens."""
    group_size: int
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class AlgoParams:
    """What the learner's policy loss needs of a phase (common/plan.py builds it; the learner only reads it)."""
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    beta: float = 0.04               # KL coefficient in the loss (0: none)
    kl_kind: str = "k3"              # k1 | k2 | k3 | abs on the sampled tokens, full = exact (learner's copy), none
    loss_agg: str = "token-mean"
    max_new_tokens: int = 64
    old_logprobs: str = "engine"     # engine | learner: the ratio's denominator (the plan resolves 'auto')
    tis_cap: float | None = 2.0      # truncated importance sampling of the learner's old policy over the engine's
