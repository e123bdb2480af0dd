"""The OpenAI-compatible HTTP API (FastAPI), independent of Ray so it can be tested alone."""
