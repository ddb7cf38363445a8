"""Hearth's shared pieces: the api<->worker contract, settings base and logging set-up."""
