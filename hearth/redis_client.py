"""Redis clients for Hearth's processes, sync (worker, RQ) and asyncio (api)."""

from collections.abc import Iterable, Mapping
from typing import cast
from urllib.parse import urlsplit

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.typing import StreamRangeResponse, ZSetRangeResponse

# redis-py's pools make connections that never retry: after Redis restarts, every pooled
# connection fails its next command once ("Connection closed by server"). One immediate retry
# on a fresh connection rides that out; a Redis that is really down still fails at once.
RETRIES = 1


def connect(url: str) -> Redis:
    return Redis.from_url(url, retry=Retry(NoBackoff(), RETRIES))


def connect_async(url: str) -> AsyncRedis:
    return AsyncRedis.from_url(url, retry=AsyncRetry(NoBackoff(), RETRIES))


def redacted(url: str) -> str:
    """REDIS_URL fit for a message: its password (and user name) left out."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    return parts._replace(netloc=f"***@{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}").geturl()


# redis-py types a reply as `bytes | str` (it cannot know a client's decode_responses) and a
# ZRANGE as maybe scored (it cannot read withscores). Hearth's clients keep bytes replies;
# these read them as text, so the rest of the code base has real types.
def text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


def texts(replies: Iterable[bytes | str]) -> list[str]:
    return [text(r) for r in replies]


def text_hash(reply: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {text(k): text(v) for k, v in reply.items()}


def members(reply: ZSetRangeResponse) -> list[str]:
    """A ZRANGE or ZREVRANGE asked without scores."""
    return texts(cast("list[bytes | str]", reply))


def stream_entries(reply: StreamRangeResponse | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """An XRANGE's entries (redis-py's type also covers XCLAIM's, where a deleted entry is None)."""
    return cast("list[tuple[bytes, dict[bytes, bytes]]]", reply or [])
