"""The model store: the registry of local models, their checkpoints and the sources they come from
(the Hugging Face hub, GGUF files, Ollama), and the demo models. :class:`manager.LocalModelManager`
is its entry point."""
