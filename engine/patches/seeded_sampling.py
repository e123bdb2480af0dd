"""A request with a ``seed`` no longer kills vLLM's CPU engine.

vLLM gives a request with a ``seed`` its own ``torch.Generator``. When a step samples a token that
it then discards (a prompt prefilled in several chunks samples after each chunk but keeps only
the last token), vLLM 0.32 rewinds that generator with ``gen.set_offset(gen.get_offset() - 4)``
(``GPUModelRunner._bookkeeping_sync``): the offset of CUDA's Philox generator. A CPU generator
(Mersenne Twister) has no offset; ``get_offset`` raises ``RuntimeError: CPU Generator does not
use offset`` in the worker, and the engine dies. Any client could do that with one long seeded
request; Parlant's adapter sends seeds (for reproducible agents and the response cache).

:func:`register` is a ``vllm.general_plugins`` entry point, run in every vLLM process. On the CPU
platform it wraps two methods of the model runner: ``_sample`` keeps the state of each CPU
generator whose token this step discards, and ``_bookkeeping_sync`` gives it that state back
instead of the offset rewind. The generator is then where it was before the discarded draw,
which is what the rewind means to do.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.patches import require_written_for

log = logging.getLogger("turnout.seeded_sampling")
_SAVED = "_turnout_discarded_generator_states"


def register() -> None:
    """vLLM general plugin: seeded requests sample on the CPU without the CUDA-only rewind."""
    require_written_for(__name__)
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    patch(GPUModelRunner)


def patch(runner_cls: type) -> None:
    """Wrap ``runner_cls._sample`` and ``_bookkeeping_sync`` (once)."""
    if getattr(runner_cls, "_turnout_seeded_sampling", False):
        return
    sample, bookkeeping = runner_cls._sample, runner_cls._bookkeeping_sync

    def _sample(self: Any, *args: Any, **kwargs: Any) -> Any:
        setattr(self, _SAVED, discarded_cpu_states(self))
        return sample(self, *args, **kwargs)

    def _bookkeeping_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        saved: dict[int, Any] = getattr(self, _SAVED, None) or {}
        generators = self.input_batch.generators
        held = {i: generators.pop(i) for i in saved if i in generators}  # out of vLLM's rewind loop
        try:
            return bookkeeping(self, *args, **kwargs)
        finally:
            for index, generator in held.items():
                generator.set_state(saved[index])
                generators[index] = generator
            setattr(self, _SAVED, None)

    runner_cls._sample = _sample
    runner_cls._bookkeeping_sync = _bookkeeping_sync
    runner_cls._turnout_seeded_sampling = True


def discarded_cpu_states(runner: Any) -> dict[int, Any]:
    """The state of every CPU generator whose request's token this step discards, by batch index."""
    import numpy as np

    num_reqs = runner.input_batch.num_reqs
    states = {}
    for index in np.nonzero(runner.discard_request_mask.np[:num_reqs])[0]:
        generator = runner.input_batch.generators.get(int(index))
        if generator is not None and generator.device.type == "cpu":
            states[int(index)] = generator.get_state()
    return states
