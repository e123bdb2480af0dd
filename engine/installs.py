"""Installing packages as this machine's pip would, with uv where it is there (many times faster).

uv does not read pip's configuration; without :func:`uv_arguments`, it would miss the indexes, local
wheel folders and constraints that this machine's pip is told to use (``pip config list`` and the
``PIP_*`` environment, the environment first, as pip does). Local folders and ``file://`` indexes
that do not exist are left out (pip only warns about them). ``make install`` prints them with
``python -m engine.installs PYTHON``; :func:`install` uses them for the separate environments
Turnout's own tools set up (llm-compressor's).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

# pip's setting -> uv's flag; list settings are space-separated in pip's configuration
FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


def pip_settings(python: str) -> dict[str, str]:
    """pip's configured value of each setting in :data:`FLAGS` (``PIP_*`` first, then files)."""
    listed = subprocess.run([python, "-m", "pip", "config", "list"], check=False,
                            capture_output=True, text=True).stdout
    found: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.rpartition(".")[2]
        if name in FLAGS and not key.startswith(":env:"):
            found[name] = value.strip().strip("'\"")
    for name in FLAGS:
        value = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if value:
            found[name] = value
    return found


def _exists(location: str) -> bool:
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else location).exists()
    return True


def uv_arguments(settings: dict[str, str]) -> list[str]:
    """uv flags for ``settings``, one flag per value, existing local locations only."""
    arguments: list[str] = []
    for name, value in settings.items():
        for item in value.split():
            if _exists(item):
                arguments += [FLAGS[name], item]
    return arguments


log = logging.getLogger("turnout.installs")


def uv() -> str | None:
    """uv beside this interpreter (``make install`` puts it there), or on the PATH, or None."""
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.is_file() else shutil.which("uv")


def install(python: Path, packages: list[str]) -> bool:
    """Install ``packages`` into the environment of ``python``, bytecode compiled (where
    ``PYTHONDONTWRITEBYTECODE`` is set, nothing else writes it): with uv, same resolution as pip
    (every index, best match), or with that environment's pip where uv is missing or fails.
    True when it worked; the installer's output goes to stderr."""
    runner = uv()
    if runner is not None:
        command = [runner, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python),
                   "--index-strategy", "unsafe-best-match", *uv_arguments(pip_settings(sys.executable)), *packages]
        if subprocess.run(command, stdout=sys.stderr, check=False).returncode == 0:
            return True
        log.warning("uv could not install %s; trying pip", " ".join(packages))
    command = [str(python), "-m", "pip", "install", "--quiet", *packages]
    return subprocess.run(command, stdout=sys.stderr, check=False).returncode == 0


if __name__ == "__main__":
    print(shlex.join(uv_arguments(pip_settings(sys.argv[1] if len(sys.argv) > 1 else sys.executable))))
