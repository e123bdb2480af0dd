"""The machine's pip settings as ``uv pip install`` arguments, printed on one line.

``make install`` installs with uv, which does not read pip's configuration; without these, uv
would miss the indexes, local wheel folders and constraints that this machine's pip is told to use
(``pip config list`` and the ``PIP_*`` environment, the environment first, as pip does). Local
folders and ``file://`` indexes that do not exist are left out (pip only warns about them).
"""

from __future__ import annotations

import os
import shlex
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


if __name__ == "__main__":
    print(shlex.join(uv_arguments(pip_settings(sys.argv[1] if len(sys.argv) > 1 else sys.executable))))
