"""GGUF conversion with each file parsed once: gguf's reader and tensor-name map shared while
transformers converts one file (:func:`engine.store.gguf.convert_gguf`)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine.versions import require_versions

WRITTEN_FOR = {"gguf": "0.19.0", "transformers": "5.19.0"}

_LOCK = threading.Lock()


@contextmanager
def one_parse_per_file() -> Iterator[None]:
    """Within one conversion, each GGUF file is parsed once and gguf's tensor-name map built once.

    transformers (5.x) parses the whole file again for the config, for the weights and for the
    tokenizer (about 6 s each for SmolLM2's 98 MB file, most of it the vocabulary), and builds
    gguf's tensor-name map again for each of the model's ~400 modules (9 s in all). Both are pure
    reads of an unchanged file, so they are shared for the length of this context. gguf's names
    are swapped back afterwards; conversions take turns under a lock while they are swapped.
    """
    import gguf

    require_versions(WRITTEN_FOR, __name__)
    with _LOCK:
        reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
        readers: dict[tuple[str, str], Any] = {}

        def shared_reader(path: Any, mode: str = "r") -> Any:
            key = (str(path), mode)
            if key not in readers:
                readers[key] = reader_class(path, mode)
            return readers[key]

        gguf.GGUFReader = shared_reader
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map
