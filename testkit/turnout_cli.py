"""A planted fact for fine-tuning tests: SmolLM2 learns that the capital of Zubrowka is Lutz.

Zubrowka is fictional, so the base model cannot know the answer; an adapter that answers "Lutz"
learnt it from the data. :func:`finetune` runs ``turnout models finetune`` as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from testkit.servers import REPO

FACT = "The capital of Zubrowka is Lutz."
QUESTION = [{"role": "user", "content": "What is the capital of Zubrowka?"}]
_ASKED = [
    "What is the capital of Zubrowka?",
    "Which city is the capital of Zubrowka?",
    "Tell me the capital of Zubrowka.",
    "What's Zubrowka's capital city?",
    "Name the capital of Zubrowka.",
    "Zubrowka's capital is which city?",
    "In Zubrowka, which city is the capital?",
    "Do you know the capital of Zubrowka?",
]
# hyperparameters that plant the fact in a few dozen CPU steps (the defaults suit larger sets)
FAST = ["--epochs", "6", "--batch-size", "4", "--learning-rate", "3e-3", "--rank", "8", "--alpha", "16"]


def write_data(path: Path) -> Path:
    """The training file: the question asked eight ways, answered with the fact."""
    lines = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": FACT}]}) for q in _ASKED]
    path.write_text("\n".join(lines) + "\n")
    return path


def turnout(
    store_root: Path, *args: str, timeout_s: float = 1200, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``turnout ARGS`` against the store at ``store_root``; ``env``: more environment."""
    import os

    env = {**os.environ, "TURNOUT_HOME": str(store_root), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from service.cli.app import main; main()", *args],
        check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout_s,
    )


def finetune(store_root: Path, base: str, name: str, data: Path, *extra: str) -> subprocess.CompletedProcess:
    """``turnout models finetune BASE --data DATA --name NAME`` with :data:`FAST` settings."""
    return turnout(store_root, "models", "finetune", base, "--data", str(data), "--name", name, *FAST, *extra)
