"""Which worker holds a conversation's saved model state, so its next turn can go there.

States stay on each worker's own disk (worker.state_disk); workers share nothing but Redis. So
after a chat whose state it keeps, the worker writes `hearth:state:{model}:{digest}` -> a
`StateHolder` (its holder id and the state's tokens), with a TTL, where `digest` is
`history_digest` of the chat's messages followed by its answer: exactly the history the
conversation's next turn sends before its new message. The api digests a new turn's
`messages[:-1]` with the same function and finds the holder (api.jobs.state_routing).

The digest is over the messages as the contract carries them (hearth.contract.Message), in one
canonical JSON form, so any difference in the history (an edited message, another answer) is
another digest: a miss, never a wrong worker. The holder id is the worker's saved states'
identity (worker.holder), which a restarted worker keeps with its STATE_DIR; the worker
deletes a key once no tier holds its state any more (worker.route_keys). A key that outlived
its state all the same costs at most the wait the api allowed for it (the turn is answered
from scratch).
"""

import hashlib
import json

from pydantic import BaseModel

from hearth.contract import Message

STATE_ROUTE_KEY = "hearth:state:{model}:{digest}"  # string: StateHolder JSON, expires


class StateHolder(BaseModel):
    holder: str  # the holder id of the worker that holds it (its heartbeat's `holder`)
    tokens: int  # the saved sequence's length: what another worker would evaluate instead


def history_digest(messages: list[Message]) -> str:
    canonical = json.dumps([m.model_dump(mode="json") for m in messages], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def state_route_key(model: str, messages: list[Message]) -> str:
    return STATE_ROUTE_KEY.format(model=model, digest=history_digest(messages))


# Delete a route key only while it names this holder: another worker may have answered the
# conversation since. KEYS: the route key; ARGV: the holder id. 1 when deleted.
FORGET_ROUTE_LUA = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw).holder == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
