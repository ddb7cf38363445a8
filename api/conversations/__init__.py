"""Conversations kept on the server (OpenAI's Conversations API): their store and schemas."""
