"""Chat completions: the request's schema and limits, turning it into a job, and rendering its events as OpenAI's objects."""
