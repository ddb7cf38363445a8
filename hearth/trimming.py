"""Which messages of a chat are never left out to fit the context window: the worker trims by
this rule (worker.context) and the api bounds a chat's size by it (api.models.workers)."""

from collections.abc import Sequence

MIN_ANSWER = 16  # without max_tokens, fewer free tokens than this is no room for an answer


def never_dropped(roles: Sequence[str]) -> list[int]:
    """Indexes of the system and developer messages and of everything from the latest user
    message on (the last message, if there is no user message)."""
    last_user = max((i for i, role in enumerate(roles) if role == "user"), default=len(roles) - 1)
    return [i for i, role in enumerate(roles) if role in ("system", "developer") or i >= last_user]
