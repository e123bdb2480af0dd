"""Quantization: the schemes a checkpoint or an engine can use (:mod:`.schemes`), int8 copies for the
CPU (:mod:`.int8`), quantized copies made with llm-compressor (:mod:`.tool`, which runs :mod:`.worker`
in its own environment) and what a quantized model costs in quality (:mod:`.quality`)."""
