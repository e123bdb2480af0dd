"""The ``turnout models`` commands on a store of small checkpoint directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkpoints import write_checkpoint


def turnout(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from service.cli.app import main; main()", *args],
        capture_output=True, text=True, env={"TURNOUT_HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_import_list_show_rm(home: Path, tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "My-Model")
    imported = turnout(home, "models", "import", str(ckpt), "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)[0]["id"] == "local/llama/my-model"

    listed = turnout(home, "models", "list")
    assert "local/llama/my-model" in listed.stdout and "chat" in listed.stdout
    as_json = json.loads(turnout(home, "models", "list", "--json").stdout)
    assert [m["family"] for m in as_json] == ["llama"]

    shown = turnout(home, "models", "show", "local/llama/my-model")
    assert "LlamaForCausalLM" in shown.stdout
    assert turnout(home, "models", "rm", "local/llama/my-model").returncode == 0
    assert json.loads(turnout(home, "models", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("models", "show", "local/llama/nope"), "not registered"),
        (("models", "show", "local/llama/../../etc"), "invalid model"),
        (("models", "rm", "nope"), "invalid model id"),
    ],
)
def test_bad_ids_exit_2_with_a_clear_message(home: Path, args: tuple[str, ...], message: str) -> None:
    result = turnout(home, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_directory_without_config_is_rejected(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = turnout(home, "models", "import", str(empty))
    assert result.returncode == 2 and "config.json" in result.stderr
    assert json.loads(turnout(home, "models", "list", "--json").stdout) == []


def test_corrupt_gguf_is_rejected(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    result = turnout(home, "models", "import", str(bad))
    assert result.returncode == 2, result.stderr
    assert "gguf" in result.stderr.lower()
    assert json.loads(turnout(home, "models", "list", "--json").stdout) == []
