"""Run llm-compressor's ``oneshot`` on one checkpoint: the script ``turnout models quantize`` starts.

It runs in llm-compressor's own environment (see :mod:`engine.quantize.tool`), so it imports nothing
from Turnout. Arguments: a JSON object on the command line with ``source``, ``out``, ``scheme``
(w8a8, w4a16, fp8), ``group_size``, ``samples``, ``max_length`` and ``calibration`` (a JSON file
of ``{"texts": [...]}``). It writes a compressed-tensors checkpoint with the source's tokenizer
files into ``out`` and prints one JSON line of figures on stdout.
"""

import json
import shutil
import sys
import time
from pathlib import Path


def recipe(scheme, group_size):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    if scheme == "fp8":  # FP8 weights, dynamic per-token FP8 activations: no calibration
        return QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=["lm_head"])
    if scheme == "w8a8":
        return GPTQModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])
    weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group_size)
    return GPTQModifier(ignore=["lm_head"], config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)})


def main(job):
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, out = Path(job["source"]), Path(job["out"])
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
    texts = json.loads(Path(job["calibration"]).read_text())["texts"][: job["samples"]]
    encode = lambda row: tokenizer(row["text"], truncation=True, max_length=job["max_length"])
    dataset = Dataset.from_dict({"text": texts}).map(encode, remove_columns=["text"])
    started = time.perf_counter()
    oneshot(model=model, dataset=dataset, recipe=recipe(job["scheme"], job["group_size"]),
            max_seq_length=job["max_length"], num_calibration_samples=len(texts))
    seconds = time.perf_counter() - started
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    for item in source.iterdir():  # chat template, generation config: whatever the saves left out
        skip = item.suffix in (".safetensors", ".bin") or item.name.endswith(".index.json")
        if item.is_file() and not skip and not (out / item.name).exists():
            shutil.copy2(item, out / item.name)
    print(json.dumps({"seconds": round(seconds, 1), "samples": len(texts)}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
