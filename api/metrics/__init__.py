"""`GET /metrics`: Prometheus metrics built from what every process recorded in Redis."""
