"""OpenAI's Responses API: request schemas, stored responses, and their rendering as Response objects."""
