"""Session-wide fixtures: the model store with the demo models, prepared once per session."""

from __future__ import annotations

import os

import pytest

pytest.register_assert_rewrite("tests.lifetimes")  # a plugin (below) that tests.graph imports first

from tests.graph import cloud_standin, deployment, graph_store  # noqa: E402, F401 - session resources of the e2e tiers
from testkit.demo_models import deepseek_record, demo_store, minilm_record, smollm2_record  # noqa: E402, F401

pytest_plugins = ["tests.lifetimes"]  # the run order, and resources stopped after their last test

# Any Ray started in or below the test process stays on loopback (tests send traffic only there).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Under pytest-xdist (`make test`: two workers on two cores) each worker's own torch work (float32
# references, GPTQ, fine-tuning) takes one thread: two threads per worker made OpenMP's waiting
# threads spin against the other worker's, and GPTQ took 5x as long as alone. Engines keep their
# own binding (cpu_threads_bind, or vLLM's).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
