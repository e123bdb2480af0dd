"""The launch plan of one engine: engine settings and vLLM's arguments for a model on a platform."""
