"""``engine/installs.py``: the machine's pip settings handed to uv (``make install``, tool environments)."""

from __future__ import annotations

import sys

from engine.installs import pip_settings, uv_arguments


def test_each_value_becomes_a_flag_and_missing_local_locations_are_left_out(tmp_path) -> None:
    wheels, constraints = tmp_path / "wheels", tmp_path / "constraints.txt"
    wheels.mkdir()
    constraints.write_text("torch<=2.14.1\n")
    settings = {
        "index-url": "https://packages.example/simple",
        "extra-index-url": f"file://{tmp_path}/missing/simple file://{wheels}",
        "find-links": f"{wheels} {tmp_path}/absent",
        "constraint": str(constraints),
    }
    assert uv_arguments(settings) == [
        "--index-url", "https://packages.example/simple",
        "--extra-index-url", f"file://{wheels}",
        "--find-links", str(wheels),
        "--constraint", str(constraints),
    ]


def test_the_environment_wins_over_pip_config_files(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_CONSTRAINT", str(tmp_path / "c.txt"))
    settings = pip_settings(sys.executable)
    assert settings["find-links"] == str(tmp_path)
    assert settings["constraint"] == str(tmp_path / "c.txt")
