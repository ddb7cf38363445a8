"""`/v1/embeddings`: OpenAI's embeddings, made by workers as jobs in each model's embedding queue."""
