"""`python -m bench`: how fast Hearth serves, measured against the model alone.

Every target is a ratio or a difference taken within one run, so a noisy, shared machine
moves both sides of a comparison together. Cases: `stream` (one stream through the whole
stack vs in-process llama.cpp) and `load` (many users on one worker).
"""
