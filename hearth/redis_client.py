"""Redis clients for Hearth's processes, sync (worker, RQ) and asyncio (api)."""

from urllib.parse import urlsplit

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

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
