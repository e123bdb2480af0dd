"""The demo models as a user sees them: ``turnout models list`` and the tiny DeepSeek generator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.protocol import ModelRecord
from engine.store.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID
from engine.store.manager import LocalModelManager
from engine.store.tiny_deepseek import write_tiny_deepseek_v3

pytestmark = pytest.mark.integration


def test_models_list_shows_the_demo_models(demo_store: LocalModelManager) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from service.cli.app import main; main()", "models", "list", "--family", "deepseek"],
        capture_output=True, text=True, env={"TURNOUT_HOME": str(demo_store.root), "COLUMNS": "200"}, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert DEEPSEEK_ID in result.stdout and "json_schema" in result.stdout
    cards = {r.id: r for r in demo_store.list_models()}
    assert {SMOLLM2_ID, DEEPSEEK_ID, MINILM_ID} <= set(cards)
    assert cards[SMOLLM2_ID].family.value == "llama" and "chat" in cards[SMOLLM2_ID].capabilities
    assert cards[MINILM_ID].capabilities == ["embeddings"]


def test_tiny_deepseek_is_deterministic(smollm2_record: ModelRecord, deepseek_record: ModelRecord, tmp_path: Path) -> None:
    write_tiny_deepseek_v3(tmp_path / "again", tokenizer_dir=smollm2_record.path, seed=0)
    original = (deepseek_record.path / "model.safetensors").read_bytes()
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == original


def test_generate_answers_and_reports_its_timing(demo_store: LocalModelManager) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from service.cli.app import main; main()", "generate",
         "What is the capital of France?", "--model", SMOLLM2_ID, "--max-tokens", "24"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TURNOUT_HOME": str(demo_store.root), "VLLM_CPU_OMP_THREADS_BIND": "nobind"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Paris" in result.stdout
    assert re.search(rf"\[{SMOLLM2_ID}: engine ready in [\d.]+s, \d+ tokens in [\d.]+s\]", result.stderr)
