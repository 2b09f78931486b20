"""Tiny random models and a word-level tokenizer, built offline from configs (milliseconds, no hub).

Vocabulary (V = 97): id 0 "<pad>", id 1 "<eos>", ids 2..96 the words "w2".."w96".
"""
from __future__ import annotations

from pathlib import Path

import torch

V = 97
PAD, EOS = 0, 1


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, pad_token_id=PAD, bos_token_id=None,
              eos_token_id=EOS)
    kw.update(overrides)
    return LlamaConfig(**kw)


def tiny_llama(seed: int = 0, dropout_off: bool = True, **overrides):
    """A random fp32 Llama in eval mode, with dropout off unless `dropout_off=False` (to save a model whose
    config still asks for dropout)."""
    from transformers import AutoModelForCausalLM

    from common.models import disable_dropout

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(**overrides), dtype=torch.float32).eval()
    if dropout_off:
        disable_dropout(model)
    return model


def tiny_t5(seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=V, d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8,
                   decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS)
    return T5ForConditionalGeneration(cfg).eval()


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<eos>": EOS, **{f"w{i}": i for i in range(2, V)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def save_model(model, folder: Path) -> str:
    """Model + tokenizer in an HF folder, as `from_pretrained` (and our loaders) expect."""
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def random_ids(gen: torch.Generator, n: int, low: int = 2) -> list[int]:
    """n random non-special token ids."""
    return torch.randint(low, V, (n,), generator=gen).tolist()


def char_tokenizer():
    """One token per printable ASCII character (ids 2..96), so real task prompts ("What is 15 + 27?") encode
    to something a tiny model can read; same V, PAD and EOS as `tiny_tokenizer`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<eos>": EOS, **{chr(c): c - 30 for c in range(32, 127)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def embedded_tokenizer_folder() -> str:
    """The embedded policy's folder (converted once into the model cache): its tokenizer and chat template."""
    from common.models import resolve_model

    return resolve_model("embedded:smollm2-135m-instruct")


def tiny_policy(folder: Path, seed: int = 0, eos_prob: float = 0.15) -> str:
    """A small random Llama with the embedded policy's tokenizer and chat template, for the real path (local Ray,
    vLLM, real tasks and data) where the 135M weights add nothing: ~7M parameters, loads and steps in a fraction
    of the real model's time, checkpoints of ~30 MB.

    A random model never ends its answers (P(EOS) ~ 1/V), so every sample would run to the token limit with the
    same reward and GRPO would see no signal. Here the last MLP adds a large constant to the residual stream, which
    the final norm turns into one fixed direction, and the LM head gives EOS probability ~`eos_prob` along it: the
    answers end at varied lengths (rewards vary, groups carry a signal, RS-SFT finds finished samples), and every
    other token stays near uniform. Training moves it like any model.
    """
    import math
    import shutil

    from transformers import AutoModelForCausalLM, LlamaConfig

    src = Path(embedded_tokenizer_folder())
    real = LlamaConfig.from_pretrained(src)
    cfg = LlamaConfig(vocab_size=real.vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=8192,
                      bos_token_id=real.bos_token_id, eos_token_id=real.eos_token_id,
                      pad_token_id=real.pad_token_id, tie_word_embeddings=False, mlp_bias=True,
                      rope_theta=getattr(real, "rope_theta", 10000.0))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        last = model.model.layers[-1].mlp.down_proj
        last.bias.zero_()
        last.bias[0] = 100.0  # dominates the residual stream: the final norm's output is ~sqrt(d) * e_0
        head = model.lm_head.weight  # [V, d]
        head[:, 0] = 0.0
        scale = math.sqrt(cfg.hidden_size)
        # P(EOS) = e^z / (e^z + V - 1) along e_0: z = log(p (V - 1) / (1 - p))
        head[cfg.eos_token_id, 0] = math.log(eos_prob * (cfg.vocab_size - 1) / (1 - eos_prob)) / scale
        for name, p in model.named_parameters():  # the rest of the MLP biases: zero
            if name.endswith("bias") and p is not last.bias:
                p.zero_()
    folder = Path(folder)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    return str(folder)
