"""Unit tests see vLLM and torch as they ship.

In a full run the integration tiers come first, and an engine started in the test process
(``LocalEngine``) applies Turnout's CPU kernel policy to it (vLLM loads its general plugins in
every process that starts an engine); the unit tests of that policy and of vLLM's kernel choice
need the process as it was.
"""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _vllm_as_shipped() -> None:
    if "vllm" in sys.modules:
        from engine.patches.cpu_kernels import restore_vllm

        restore_vllm()
