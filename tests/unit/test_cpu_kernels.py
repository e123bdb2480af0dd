"""The CPU kernel policy, checked against vLLM's own selection code for CPUs with and without AMX.

The machine running these tests may or may not have AMX; torch's AMX query is monkeypatched to
play both, and vLLM's real selection functions are asked what they would pick.
"""

from __future__ import annotations

import pytest
import torch

from engine.launch.cpu import POLICY_ENV, CpuKernels, parse_cpuinfo, policy_from_env
from engine.patches import cpu_kernels
from engine.patches.cpu_kernels import (
    apply_policy,
    hide_amx,
    mend_rotary_embedding,
    restore_vllm,
    stop_spinning,
)

SAPPHIRE_RAPIDS = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ICE_LAKE = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
GRAVITON = "Features\t: fp asimd bf16 sve\n"


@pytest.fixture
def cpu_with_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch (and so vLLM) sees AMX; torch's own functions are restored after the test."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: True)


@pytest.fixture
def cpu_without_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)


@pytest.fixture
def rotary_restored(monkeypatch: pytest.MonkeyPatch):
    """What the test changes in vLLM is put back after it (conftest gives it vLLM as shipped)."""
    from vllm.distributed.device_communicators.shm_broadcast import SpinCondition
    from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding

    monkeypatch.setattr(RotaryEmbedding, "forward_cpu", RotaryEmbedding.forward_cpu)
    monkeypatch.setattr(SpinCondition.__init__, "__defaults__", SpinCondition.__init__.__defaults__)
    return RotaryEmbedding


def test_cpu_features_from_cpuinfo() -> None:
    amx = parse_cpuinfo(SAPPHIRE_RAPIDS, arch="x86_64")
    assert amx.has_amx and amx.avx512f and amx.avx512_bf16
    assert amx.names() == ["amx_bf16", "amx_tile", "avx512f", "avx512_bf16", "avx2"]
    plain = parse_cpuinfo(ICE_LAKE, arch="x86_64")
    assert not plain.has_amx and plain.avx512f
    arm = parse_cpuinfo(GRAVITON, arch="aarch64")
    assert not arm.has_amx and arm.names() == []


def test_the_policy_comes_from_the_environment() -> None:
    assert policy_from_env({}) is CpuKernels.PORTABLE
    assert policy_from_env({POLICY_ENV: " VLLM "}) is CpuKernels.VLLM
    with pytest.raises(ValueError, match=POLICY_ENV):
        policy_from_env({POLICY_ENV: "fast"})


def _attention_isa() -> str:
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    return _get_attn_isa(torch.bfloat16, 32, 64)  # SmolLM2: bf16, head size 64


def _mla_backend() -> str:
    from vllm.platforms.cpu import CpuPlatform
    from vllm.v1.attention.selector import AttentionSelectorConfig

    config = AttentionSelectorConfig(576, torch.bfloat16, None, 16, use_mla=True)
    return CpuPlatform.get_attn_backend_cls(None, config).rsplit(".", 1)[-1]


def _moe_uses_amx() -> bool:
    from vllm.model_executor.layers.fused_moe.experts.cpu_moe import (
        X86CPUUnquantizedExperts,
    )

    return X86CPUUnquantizedExperts._supports_current_device()


@pytest.mark.usefixtures("cpu_with_amx", "rotary_restored")
def test_on_an_amx_cpu_vllm_alone_takes_its_amx_kernels() -> None:
    assert apply_policy(CpuKernels.VLLM) == []
    assert _attention_isa() == "amx"  # the path that answers "L'Étoile, la Marseillaise, ..."
    assert _mla_backend() == "AMXMLABackend"
    assert _moe_uses_amx()


@pytest.mark.usefixtures("cpu_with_amx", "rotary_restored")
def test_on_an_amx_cpu_portable_takes_the_avx512_kernels() -> None:
    changes = apply_policy(CpuKernels.PORTABLE)
    assert "AMX hidden from vLLM's kernel selection" in changes
    assert _attention_isa() == "vec"
    assert _mla_backend() == "CPUMLABackend"
    assert not _moe_uses_amx()


@pytest.mark.usefixtures("cpu_without_amx", "rotary_restored")
def test_without_amx_both_policies_take_the_same_kernels() -> None:
    assert apply_policy(CpuKernels.VLLM) == []
    assert (_attention_isa(), _mla_backend()) == ("vec", "CPUMLABackend")
    assert not any("AMX" in change for change in apply_policy(CpuKernels.PORTABLE))
    assert (_attention_isa(), _mla_backend()) == ("vec", "CPUMLABackend")


def _rotary(neox: bool):
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    with set_current_vllm_config(VllmConfig()):
        return get_rope(
            64, max_position=4096, rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
            is_neox_style=neox, dtype=torch.bfloat16,
        )


def _mla_shaped_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek MLA's rotary inputs: slices of the query [T, H, nope+rope] and of the latent."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(8, 4, 128, generator=generator).to(torch.bfloat16)
    latent = torch.randn(8, 1, 576, generator=generator).to(torch.bfloat16)
    return query, latent


@pytest.mark.parametrize("neox", [False, True])
def test_vllms_cpu_rotary_op_is_wrong_for_multi_head_3d_inputs(rotary_restored, neox: bool) -> None:
    """The defect the mend exists for; if a vLLM upgrade fixes it, this fails and says so."""
    rope = _rotary(neox)
    query, latent = _mla_shaped_inputs()
    positions = torch.arange(8)
    expected, _ = rope.forward_native(positions, query[..., 64:].clone(), latent[..., 512:].clone())
    got, _ = rope.forward_cpu(positions, query[..., 64:].clone(), latent[..., 512:].clone())
    assert (got.float() - expected.float()).abs().max() > 1.0


@pytest.mark.parametrize("neox", [False, True])
def test_the_mended_rotary_op_matches_the_reference_in_place(rotary_restored, neox: bool) -> None:
    assert mend_rotary_embedding()
    assert not mend_rotary_embedding()  # twice is once
    rope = _rotary(neox)
    query, latent = _mla_shaped_inputs()
    positions = torch.arange(8)
    expected_q, expected_k = rope.forward_native(positions, query[..., 64:].clone(), latent[..., 512:].clone())
    q_view, k_view = query.clone(), latent.clone()
    got_q, got_k = rope.forward_cpu(positions, q_view[..., 64:], k_view[..., 512:])
    assert (got_q.float() - expected_q.float()).abs().max() <= 0.02  # bf16 rounding
    assert (got_k.float() - expected_k.float()).abs().max() <= 0.02
    # written in place, as the op does: the rotary part changed, the rest did not
    assert torch.equal(q_view[..., 64:], got_q) and torch.equal(q_view[..., :64], query[..., :64])
    assert torch.equal(k_view[..., :512], latent[..., :512])
    flat = query[..., 64:].reshape(8, -1).clone()  # 2-D inputs take vLLM's op unchanged
    native, _ = rope.forward_native(positions, flat.clone(), latent[..., 512:].reshape(8, -1).clone())
    assert (rope.forward_cpu(positions, flat, latent[..., 512:].reshape(8, -1).clone())[0].float()
            - native.float()).abs().max() <= 0.02


@pytest.mark.usefixtures("rotary_restored")
def test_engine_queues_block_instead_of_spinning() -> None:
    from vllm.distributed.device_communicators.shm_broadcast import SpinCondition

    assert SpinCondition.__init__.__defaults__ == (1,)  # vLLM: spin for a second after each read
    assert stop_spinning() and not stop_spinning()
    assert SpinCondition.__init__.__defaults__ == (0,)  # block at once on the notify socket


@pytest.mark.usefixtures("rotary_restored")
def test_vllm_can_be_restored_after_the_policy_in_process() -> None:
    """What an in-process engine leaves behind for the tests above to undo."""
    from vllm.distributed.device_communicators.shm_broadcast import SpinCondition
    from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding

    shipped = RotaryEmbedding.forward_cpu
    assert mend_rotary_embedding() and stop_spinning()
    assert RotaryEmbedding.forward_cpu is not shipped
    restore_vllm()
    assert RotaryEmbedding.forward_cpu is shipped and SpinCondition.__init__.__defaults__ == (1,)


def test_restore_gives_torch_its_amx_queries_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def amx_present() -> bool:
        return True

    amx_present.__module__ = "torch.cpu"  # stands in for torch's own query on an AMX CPU
    monkeypatch.setattr(cpu_kernels, "_torch_amx_queries", {})
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", amx_present)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", amx_present)
    assert hide_amx() and not torch.cpu._is_amx_tile_supported()
    restore_vllm()
    assert torch.cpu._is_amx_tile_supported is amx_present and torch.cpu._is_amx_fp16_supported is amx_present
