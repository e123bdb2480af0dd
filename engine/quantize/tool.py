"""``turnout models quantize``: a registered model's quantized copy, made with llm-compressor.

llm-compressor 0.14 needs compressed-tensors 0.19 and transformers <= 5.17, while vLLM 0.32 pins
compressed-tensors 0.17, so the two cannot share one environment. It gets its own, made once
under ``$TURNOUT_HOME/tools/`` with the interpreter Turnout runs on (``TURNOUT_LLMCOMPRESSOR_PYTHON``
names an existing one instead), and :mod:`engine.quantize.worker` runs there as a separate
process. Its output is a compressed-tensors checkpoint, which vLLM serves.

Schemes (:data:`SCHEMES`): ``w8a8`` (GPTQ int8 weights per channel, dynamic int8 activations per
token), ``w4a16`` (GPTQ int4 weights in groups of 128, 64 or 32, 16-bit activations) and ``fp8``
(FP8 weights, dynamic FP8 activations; round-to-nearest). GPTQ calibrates on the texts shipped in
``engine/data/calibration.json``: nothing is downloaded. The new model is built in the store's
staging folder and registered in one step (:meth:`LocalModelManager.import_built`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from engine.errors import ClientError, ConfigError, ServerError
from engine.installs import install
from engine.protocol import ModelRecord, ModelType, SourceKind, validate_name
from engine.store.checkpoint import read_config
from engine.store.manager import LocalModelManager

LLMCOMPRESSOR = "llmcompressor==0.14.0.1"
PYTHON_ENV = "TURNOUT_LLMCOMPRESSOR_PYTHON"
SCHEMES = ("w8a8", "w4a16", "fp8")
CALIBRATION = Path(__file__).parents[1] / "data" / "calibration.json"
WORKER = Path(__file__).with_name("worker.py")
GROUP_SIZES = (128, 64, 32)
log = logging.getLogger("turnout.quantize")


def tool_python(root: Path) -> Path:
    """The Python of llm-compressor's environment, set up first if it is not there yet."""
    named = os.environ.get(PYTHON_ENV)
    if named:
        return Path(named)
    home = root / "tools" / LLMCOMPRESSOR.replace("==", "-")
    python = home / "bin" / "python"
    if (home / ".installed").is_file():
        return python
    log.warning("setting up %s in %s (once; a few minutes)", LLMCOMPRESSOR, home)
    _run([sys.executable, "-m", "venv", "--clear", str(home)], "creating its environment")
    # the torch Turnout runs on (a CPU or CUDA build): unpinned, pip may choose a CUDA build on a CPU machine
    import torch

    if not install(python, [LLMCOMPRESSOR, f"torch=={torch.__version__}"]):
        raise ServerError(f"installing {LLMCOMPRESSOR} failed; its output is above")
    (home / ".installed").touch()
    return python


def group_size(config: dict) -> int:
    """The largest of 128, 64, 32 that divides every linear layer's input size."""
    sizes = [config.get(k) for k in ("hidden_size", "intermediate_size", "moe_intermediate_size")]
    sizes = [s for s in sizes if isinstance(s, int)]
    for size in GROUP_SIZES:
        if all(s % size == 0 for s in sizes):
            return size
    raise ConfigError(f"no group size of {GROUP_SIZES} divides the layer sizes {sizes}", param="scheme")


async def quantize(
    manager: LocalModelManager, source: ModelRecord, scheme: str, *, name: str | None = None,
    samples: int = 64, max_length: int = 256,
) -> ModelRecord:
    """Quantize ``source`` with ``scheme`` and register the result as ``<family>/<name>``
    (default ``<source name>-<scheme>``); nothing is registered if it fails."""
    if scheme not in SCHEMES:
        raise ClientError(f"scheme {scheme!r} is not one of {', '.join(SCHEMES)}", param="scheme")
    if source.quantization is not None:
        raise ClientError(f"{source.id} is quantized already ({source.quantization.label})", param="model")
    if source.family is ModelType.EMBEDDING:
        raise ClientError(f"{source.id} is an embedding model; quantize generative models", param="model")
    name = validate_name(name or f"{source.name}-{scheme}")
    group = group_size(read_config(source.path)) if scheme == "w4a16" else None
    job = {"source": str(source.path), "scheme": scheme, "group_size": group,
           "samples": samples, "max_length": max_length, "calibration": str(CALIBRATION)}
    manager.fail_if_taken(source.family, name)
    python = tool_python(manager.root)

    def build(out: Path) -> dict[str, str]:
        figures = json.loads(_run([str(python), str(WORKER), json.dumps(job | {"out": str(out)})],
                                  f"quantizing {source.id} to {scheme}", capture=True).splitlines()[-1])
        meta = {"quantized_from": source.id, "quantize.scheme": scheme, "quantize.tool": LLMCOMPRESSOR,
                "quantize.samples": str(figures["samples"]), "quantize.seconds": str(figures["seconds"])}
        return meta | ({"quantize.group_size": str(group)} if group else {})

    return await manager.import_built(
        build, name=name, family=source.family, source=SourceKind.GENERATED, source_ref=source.id,
    )


def _run(command: list[str], what: str, *, capture: bool = False) -> str:
    """Run ``command`` with its progress on our stderr; its stdout if ``capture``."""
    env = os.environ | {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    done = subprocess.run(command, check=False, stdout=subprocess.PIPE if capture else sys.stderr, text=True, env=env)
    if done.returncode != 0:
        raise ServerError(f"{what} failed (exit {done.returncode}); its output is above")
    return done.stdout or ""
