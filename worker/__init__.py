"""The model worker: an RQ worker that holds one GGUF model for its whole life."""
