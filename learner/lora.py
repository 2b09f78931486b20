"""LoRA adapters on the learner's policy (peft), the NLU paper's setup (rank 16 on the attention projections).

The engines never see adapters: `merged_state` gives the plain model's weights with every adapter's delta
added (W + scale * B @ A), computed without touching the model, so a sync is the same full-weight reload as
without LoRA and the per-step vLLM-vs-learner logprob gap proves the engine samples from the adapted policy.

The reference is the same model with its adapters disabled: no second copy in memory. For that to be the model
a phase started from (the papers' reference after SFT), `merge_and_reset` folds the adapters into the base
weights when a phase starts and gives the next phase fresh adapters (B = 0, so the policy is unchanged).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ADAPTER = "default"


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


def wrap(model, spec: LoraSpec):
    """`model` with LoRA adapters on `spec.target_modules`; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.target_modules), bias="none",
                        task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"learner.lora.target_modules {list(spec.target_modules)} do not name layers of this "
                         f"model ({err}); its linear layers are called {names}") from None


def lora_layers(peft_model) -> dict[str, object]:
    """{module name in the plain model: its LoRA layer}."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    return {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}


@torch.no_grad()
def merged_state(peft_model) -> dict[str, torch.Tensor]:
    """The plain model's state dict (its own parameter names) with the adapters' deltas added; no copy of a
    weight without an adapter, and the model itself is not changed."""
    layers = lora_layers(peft_model)
    out = {}
    for key, value in peft_model.get_base_model().state_dict().items():
        if ".lora_" in key:
            continue
        name = key.replace(".base_layer.", ".")
        module = name.rsplit(".", 1)[0]
        if name.endswith(".weight") and module in layers and ".base_layer." in key:
            value = value + layers[module].get_delta_weight(ADAPTER).to(value.dtype)
        out[name] = value
    return out


@torch.no_grad()
def merge_and_reset(peft_model) -> None:
    """Fold the adapters into the base weights and start fresh ones (B = 0): the policy is unchanged, and with
    the adapters disabled the model is now this policy (the next phase's reference)."""
    for layer in lora_layers(peft_model).values():
        base = layer.get_base_layer()
        base.weight += layer.get_delta_weight(ADAPTER).to(base.weight.dtype)
        layer.reset_lora_parameters(ADAPTER, True)


def trainable(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
