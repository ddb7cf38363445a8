"""`GET /v1/status`: the queue, running and recent jobs, and the last hour, for the ui's Status tab."""
