"""KV-aware routing: route a prompt to the replica whose engine really holds its prefix.

Each vLLM engine publishes KV cache events (blocks stored, removed, cleared) over ZMQ. The
pieces, each usable and testable alone:

- :mod:`router.kv.hashing`: a prompt's block keys, computed as vLLM's prefix cache computes them;
- :mod:`router.kv.events`: the publisher's wire format decoded into plain dataclasses;
- :mod:`router.kv.index`: per replica, the blocks its engine holds, kept by those events, with
  sequence checks so that lost events never make the index claim more than the engine holds;
- :mod:`router.kv.cost`: the replica choice from cached tokens and load;
- :mod:`router.kv.subscriber`: the ZMQ client that feeds one replica's events into the index.

Nothing here imports vLLM, Ray or the service layer; the wiring into Ray Serve lives elsewhere.
"""
