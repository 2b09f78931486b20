# Two entry points (see README): `make smoke` and `make test`. Both build .venv first if needed.
PY := .venv/bin/python
EXTRA ?= cpu

.PHONY: setup smoke test test-fast bench clean
setup:
	bash scripts/setup.sh $(EXTRA)

smoke: setup
	$(PY) jobs/grpo_mlqa.py --config jobs/configs/smoke.yaml --local

test: setup
	bash scripts/run_tests.sh

test-fast: setup
	bash scripts/run_tests.sh -m "not slow"

bench:
	bash scripts/setup.sh $(EXTRA) bench
	$(PY) bench/run.py

clean:
	rm -rf .venv runs
