"""Fine-tuning and serving LoRA adapters, as a user does it: ``turnout models finetune`` on the
CPU, then the served graph answers through the adapter id with what the adapter learnt.

On the session's demo graph (tests/graph.py), whose SmolLM2 engine serves up to two adapters at
once: the adapter is trained into the graph's store while the graph runs, so every adapter here
is one registered after the graph started.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import psutil
import pytest

from engine.store.demo import SMOLLM2_ID
from engine.store.manager import LocalModelManager
from testkit.servers import Server
from testkit.turnout_cli import QUESTION, finetune, turnout, write_data
from tests.graph import Deployment

pytestmark = pytest.mark.e2e
ZUB = f"{SMOLLM2_ID}:zubrowka"


@pytest.fixture(scope="session")  # once, whatever the order: the adapter stays registered
def trained(deployment: Deployment) -> tuple[Path, str, str]:
    """(store root, finetune's stdout, its stderr) after training the Zubrowka adapter into the
    demo graph's store."""
    root = deployment.store.root
    result = finetune(root, SMOLLM2_ID, "zubrowka", write_data(root / "zubrowka.jsonl"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result.stdout, result.stderr


@pytest.fixture(scope="session")
def served(trained, deployment: Deployment) -> tuple[Server, str, str]:
    """(the graph's process, its base URL, its metrics URL), once the adapter is registered."""
    return deployment.server, deployment.base_url, deployment.metrics_url


def _ask(base: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": QUESTION, "max_tokens": 16, "temperature": 0}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)


def _content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_finetune_reports_its_figures_and_registers_the_adapter(trained) -> None:
    root, stdout, stderr = trained
    assert "loss=" in stderr  # the progress bar shows the loss
    assert "held-out loss" in stdout and "s/step" in stdout
    listed = json.loads(turnout(root, "models", "list", "--json").stdout)
    adapter = next(r for r in listed if r["id"] == ZUB)
    assert adapter["base"] == SMOLLM2_ID and adapter["rank"] == 8 and adapter["source"] == "finetuned"
    figures = adapter["metadata"]
    assert int(figures["training.steps"]) > 0 and int(figures["training.held_out_examples"]) == 1
    assert float(figures["training.final_loss"]) < float(figures["training.first_loss"])
    assert float(figures["training.held_out_loss_after"]) < float(figures["training.held_out_loss_before"])


def test_the_adapter_answers_with_what_it_learnt_and_the_base_does_not(served) -> None:
    server, base, _ = served
    adapted, plain = _ask(base, ZUB), _ask(base, SMOLLM2_ID)
    assert "Lutz" in _content(adapted), adapted.text
    assert "Lutz" not in _content(plain), plain.text
    assert adapted.headers["x-turnout-model"] == ZUB and adapted.json()["model"] == ZUB
    assert adapted.headers["x-turnout-route"] == f"{ZUB}=served"
    assert plain.headers["x-turnout-model"] == SMOLLM2_ID
    # both answered by the one SmolLM2 replica and its one engine
    replicas = [p for p in psutil.Process(server.process.pid).children(recursive=True)
                if "model:local--llama--smollm2" in " ".join(p.cmdline()) and "replica" in " ".join(p.cmdline()).lower()]
    assert len(replicas) == 1
    engines = [" ".join(c.cmdline()) for c in replicas[0].children(recursive=True)]
    assert len([c for c in engines if c.startswith("VLLM::EngineCore")]) == 1, engines
    cards = {c["id"]: c for c in httpx.get(f"{base}/v1/models", timeout=30).json()["data"]}
    assert cards[ZUB]["parent"] == SMOLLM2_ID


def test_an_adapter_registered_after_start_is_served_without_a_restart(served, trained) -> None:
    root = trained[0]
    server, base, _ = served
    assert _ask(base, f"{SMOLLM2_ID}:copy").status_code == 404
    source = LocalModelManager(root).adapters.get(ZUB).path
    added = turnout(root, "models", "add-adapter", SMOLLM2_ID, str(source), "--name", "copy")
    assert added.returncode == 0, added.stderr
    assert "Lutz" in _content(_ask(base, f"{SMOLLM2_ID}:copy"))
    assert server.process.poll() is None


def test_metrics_name_the_adapter(served) -> None:
    _, base, metrics_url = served
    _content(_ask(base, ZUB))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = httpx.get(metrics_url, timeout=10).text
        if f'model="{ZUB}"' in text:
            break
        time.sleep(3)
    lines = [line for line in text.splitlines() if line.startswith("ray_turnout_requests_total{") and f'model="{ZUB}"' in line]
    assert lines, "no request metric names the adapter"


def test_bad_training_data_is_named_by_line_and_registers_nothing(trained) -> None:
    root = trained[0]
    data = root / "bad.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
                    + "\n" + json.dumps({"messages": [{"role": "robot", "content": "hi"}]}) + "\n")
    result = finetune(root, SMOLLM2_ID, "bad", data)
    assert result.returncode == 2
    assert "line 2, message 1: role 'robot'" in result.stderr
    assert all(r["id"] != f"{SMOLLM2_ID}:bad" for r in json.loads(turnout(root, "models", "list", "--json").stdout))


async def test_a_parlant_service_pinned_to_the_adapter(served) -> None:
    """The Parlant adapter names the adapter id like any model, and gets the adapter's answers."""
    pytest.importorskip("turnout_parlant")
    from turnout_parlant import GenerationSettings, TurnoutNLPService

    nlp = TurnoutNLPService(served[1], model=ZUB, settings=GenerationSettings(default_temperature=0.0))
    try:
        await nlp.initialize()
        assert nlp.model == ZUB
        result = (await nlp.get_streaming_text_generator()).generate(
            "What is the capital of Zubrowka?", {"temperature": 0.0},
        )
        text = "".join([chunk async for chunk in result.stream if chunk])
        assert "Lutz" in text, text
        assert result.info.model == ZUB
    finally:
        await nlp.aclose()
