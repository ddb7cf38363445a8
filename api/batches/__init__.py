"""Batches (OpenAI's Batches API): the store of a batch's state and the runner that feeds its lines."""
