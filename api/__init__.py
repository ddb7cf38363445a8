"""The OpenAI-compatible HTTP api: turns requests into RQ jobs and relays their events."""
