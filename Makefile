# Two entry points (see README): `make smoke` and `make test`. Both build .venv first if needed.
PY := .venv/bin/python
EXTRA ?= cpu
# extra overrides for the smoke job, e.g. SMOKE_ARGS="learner.precision=bf16 rollout.dtype=bf16" (bf16 forced)
SMOKE_ARGS ?=

.PHONY: setup smoke test test-fast bench clean
setup:
	bash scripts/setup.sh $(EXTRA)

smoke: setup
	$(PY) jobs/grpo_mlqa.py --config jobs/configs/smoke.yaml --local $(SMOKE_ARGS)

test: setup
	bash scripts/run_tests.sh

test-fast: setup
	bash scripts/run_tests.sh -m "not slow"

bench:
	bash scripts/setup.sh $(EXTRA) bench
	$(PY) bench/run.py --raw docs/benchmarks.json

clean:
	rm -rf .venv runs
