"""Files (OpenAI's Files API): uploads, batch outputs and their store."""
