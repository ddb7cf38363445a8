"""Conversations kept on the server, per user, in Redis: the one module that knows their keys.

Every key carries its owner's name, so a request can only reach its own user's conversations:
another user's id does not exist for it (404), admins included. Writes that check a cap or
must not repeat are one Lua script each, so api processes on several machines cannot race
past a cap or record one answer twice.
"""

import json
import re
import time
from collections.abc import Sequence
from typing import Literal

from redis.asyncio import Redis as AsyncRedis

from api.conversations.schemas import (
    ID_PATTERN,
    ITEM,
    TITLE_KEY,
    AnyItem,
    Conversation,
    ExportedConversation,
    MessageItem,
    Status,
    call_item,
    call_item_id,
    message,
    new_id,
)
from api.errors import HearthError
from api.settings import ApiSettings
from hearth.contract import ToolCall
from hearth.documents import Citation
from hearth.metadata import METADATA_PAIRS
from hearth.redis_client import members, text, texts

# hash: created_at (s), metadata (JSON), seq (last item position), answering (the job writing its answer),
# answering_ms (when it was marked), asked (that turn's question ids, space-separated)
CONVERSATION_KEY = "hearth:conv:{owner}:{id}"
ITEMS_KEY = CONVERSATION_KEY + ":items"  # hash: item id -> item JSON (a message, function call or its output)
ORDER_KEY = CONVERSATION_KEY + ":order"  # sorted set: item id by position
ANSWERS_KEY = CONVERSATION_KEY + ":answers"  # hash: job id -> id of the answer recorded for it
# sorted set: the items the answer in progress replaced (their JSON, by position), put back if its turn is withdrawn
REPLACED_KEY = CONVERSATION_KEY + ":replaced"
INDEX_KEY = "hearth:convs:{owner}"  # sorted set: the owner's conversation ids by last activity (ms)
DEFAULTS_KEY = INDEX_KEY + ":defaults"  # string: the metadata JSON the owner's new chats start with

TITLE_CHARS = 60  # a title is the first user message's start: what a sidebar row shows
SCAN_CHUNK = 50  # conversations read per round trip while searching or exporting

# Adds items to a conversation (creating it first when asked), checking every cap before
# writing anything. Items already present (by id) and a job already answered add nothing.
# A question that starts a job's answer marks that job in the same step, and only while no
# other answer is marked: two turns sent at once cannot both be taken. Such a turn may replace
# a stored item and every one after it (a regenerated or edited question): they move aside to
# the replaced set in the same step, and the turn may require the last item its question
# follows to be the one its history was read up to ('changed' when another writer came
# between: the prompt would not be what is stored).
# KEYS: conversation, items, order, answers, replaced, index. ARGV: conversation id, create (1/0),
# created_at, metadata JSON, max conversations, max items (0: no cap), job id, title,
# activity ms, activity mode (top: now, above every other; keep: as given, or later), job id
# to mark as answering (or ''; marked with Redis's time: api processes on several machines
# need not agree on theirs), id of the first item to replace (or ''), whether to check what
# the question follows (1/0), the id it must follow ('': nothing), then item id and item JSON pairs.
_WRITE_LUA = f"""
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists and ARGV[2] ~= '1' then return {{'missing'}} end
if ARGV[11] ~= '' and redis.call('HEXISTS', KEYS[1], 'answering') == 1 then return {{'busy'}} end
if ARGV[7] ~= '' and redis.call('HEXISTS', KEYS[4], ARGV[7]) == 1 then return {{'ok', 0}} end
if not exists and redis.call('ZCARD', KEYS[6]) >= tonumber(ARGV[5]) then return {{'too_many_conversations'}} end
local replaced, below = {{}}, '+inf'
if ARGV[12] ~= '' then
  local at = redis.call('ZSCORE', KEYS[3], ARGV[12])
  if not at then return {{'changed'}} end
  replaced, below = redis.call('ZRANGEBYSCORE', KEYS[3], at, '+inf', 'WITHSCORES'), '(' .. at
end
if ARGV[13] == '1' and (redis.call('ZREVRANGEBYSCORE', KEYS[3], below, '-inf', 'LIMIT', 0, 1)[1] or '') ~= ARGV[14] then
  return {{'changed'}}
end
local new = {{}}
for i = 15, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then new[#new + 1] = i end
end
local max = tonumber(ARGV[6])
if max > 0 and #new > 0 and redis.call('ZCARD', KEYS[3]) - #replaced / 2 + #new > max then return {{'too_many_items'}} end
if not exists then redis.call('HSET', KEYS[1], 'created_at', ARGV[3], 'metadata', ARGV[4], 'seq', 0) end
if ARGV[11] ~= '' then redis.call('DEL', KEYS[5]) end
for i = 1, #replaced, 2 do
  redis.call('ZADD', KEYS[5], replaced[i + 1], redis.call('HGET', KEYS[2], replaced[i]))
  redis.call('HDEL', KEYS[2], replaced[i])
  redis.call('ZREM', KEYS[3], replaced[i])
end
local asked = {{}}
for _, i in ipairs(new) do
  redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[1], 'seq', 1), ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  asked[#asked + 1] = ARGV[i]
end
if ARGV[7] ~= '' and #new > 0 then redis.call('HSET', KEYS[4], ARGV[7], ARGV[new[1]]) end
if ARGV[11] ~= '' then
  local now = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'answering', ARGV[11], 'answering_ms', now[1] * 1000 + math.floor(now[2] / 1000),
             'asked', table.concat(asked, ' '))
end
if ARGV[8] ~= '' then
  local meta = cjson.decode(redis.call('HGET', KEYS[1], 'metadata'))
  local n = 0
  for _ in pairs(meta) do n = n + 1 end
  if meta['{TITLE_KEY}'] == nil and n < {METADATA_PAIRS} then
    meta['{TITLE_KEY}'] = ARGV[8]
    redis.call('HSET', KEYS[1], 'metadata', cjson.encode(meta))
  end
end
local score = tonumber(ARGV[9])
if ARGV[10] == 'top' then
  local top = redis.call('ZREVRANGE', KEYS[6], 0, 0, 'WITHSCORES')
  if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 1 end
  redis.call('ZADD', KEYS[6], score, ARGV[1])
else
  redis.call('ZADD', KEYS[6], 'GT', score, ARGV[1])
end
return {{'ok', #new}}
"""

# A page of items, in position order. KEYS: conversation, order, items.
# ARGV: after (an item id, or ''), count (-1: all), asc|desc.
_ITEMS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local asc = ARGV[3] == 'asc'
local from = asc and '-inf' or '+inf'
if ARGV[1] ~= '' then
  local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if not s then return {'bad_after'} end
  from = '(' .. s
end
local ids
if asc then ids = redis.call('ZRANGEBYSCORE', KEYS[2], from, '+inf', 'LIMIT', 0, ARGV[2])
else ids = redis.call('ZREVRANGEBYSCORE', KEYS[2], from, '-inf', 'LIMIT', 0, ARGV[2]) end
local out = {'ok'}
for _, id in ipairs(ids) do out[#out + 1] = redis.call('HGET', KEYS[3], id) end
return out
"""

# KEYS: conversation. ARGV: metadata JSON. Replaces the metadata of an existing conversation.
_UPDATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'metadata', ARGV[1])
return 1
"""

# KEYS: conversation, replaced. ARGV: job id. Clears the mark, if it is still this job's: its
# turn stands, and what it replaced is gone for good.
_UNMARK_LUA = """
if redis.call('HGET', KEYS[1], 'answering') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'answering', 'answering_ms', 'asked')
  redis.call('DEL', KEYS[2])
end
return 0
"""

# KEYS: conversation, replaced, items. ARGV: job id. The turn the job's mark stands for: how
# many of its own items follow, those items, then the items it replaced (nothing when the mark
# is another's, or none).
_TURN_LUA = """
if redis.call('HGET', KEYS[1], 'answering') ~= ARGV[1] then return {} end
local out = {0}
for id in string.gmatch(redis.call('HGET', KEYS[1], 'asked') or '', '%S+') do
  local raw = redis.call('HGET', KEYS[3], id)
  if raw then out[1] = out[1] + 1; out[#out + 1] = raw end
end
for _, raw in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do out[#out + 1] = raw end
return out
"""

# KEYS: conversation, items, order, replaced. ARGV: job id. A turn that never happened, if the
# mark is still its job's: its question goes, what it replaced comes back in its place, and
# the mark is cleared. Answers the question's items it deleted.
_WITHDRAW_LUA = """
if redis.call('HGET', KEYS[1], 'answering') ~= ARGV[1] then return {} end
local gone = {}
for id in string.gmatch(redis.call('HGET', KEYS[1], 'asked') or '', '%S+') do
  local raw = redis.call('HGET', KEYS[2], id)
  if raw then gone[#gone + 1] = raw end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local replaced = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
for i = 1, #replaced, 2 do
  local id = cjson.decode(replaced[i])['id']
  redis.call('HSET', KEYS[2], id, replaced[i])
  redis.call('ZADD', KEYS[3], replaced[i + 1], id)
end
redis.call('DEL', KEYS[4])
redis.call('HDEL', KEYS[1], 'answering', 'answering_ms', 'asked')
return gone
"""

# KEYS: items, replaced. ARGV: item ids. Those of them the conversation holds neither among its
# items nor aside (replaced by a turn under way, which may yet be withdrawn).
_MISSING_LUA = """
local aside = {}
for _, raw in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do aside[cjson.decode(raw)['id']] = true end
local out = {}
for _, id in ipairs(ARGV) do
  if redis.call('HEXISTS', KEYS[1], id) == 0 and not aside[id] then out[#out + 1] = id end
end
return out
"""


def _not_found(conv_id: str) -> HearthError:
    return HearthError(404, f"No conversation {conv_id!r}.", "not_found_error", "conversation_not_found", "conversation_id")


def item_not_found(conv_id: str, item_id: str, param: str = "item_id") -> HearthError:
    return HearthError(404, f"No item {item_id!r} in conversation {conv_id!r}.", "not_found_error", "item_not_found", param)


def _too_many(what: str, cap: int, param: str | None) -> HearthError:
    return HearthError(400, f"At most {cap} {what}; delete some first.", code="conversation_limit_reached", param=param)


def _title(items: Sequence[AnyItem]) -> str:
    """The start of the first user message, cut at a word: no model call, instant."""
    text = next((" ".join(i.text().split()) for i in items if isinstance(i, MessageItem) and i.role == "user"), "")
    if len(text) <= TITLE_CHARS:
        return text
    cut = text[: TITLE_CHARS - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ConversationStore:
    def __init__(self, redis: AsyncRedis, settings: ApiSettings):
        self._redis = redis
        self._max_conversations = settings.conversations_per_user
        self._max_items = settings.conversation_items
        self._max_chars = settings.conversation_text_chars
        self._write_script = redis.register_script(_WRITE_LUA)
        self._items_script = redis.register_script(_ITEMS_LUA)
        self._update_script = redis.register_script(_UPDATE_LUA)
        self._unmark_script = redis.register_script(_UNMARK_LUA)
        self._turn_script = redis.register_script(_TURN_LUA)
        self._missing_script = redis.register_script(_MISSING_LUA)
        self._withdraw_script = redis.register_script(_WITHDRAW_LUA)

    @staticmethod
    def _keys(owner: str, conv_id: str) -> list[str]:
        """conversation, items, order, answers, replaced; an id that could address another key is absent."""
        if not re.fullmatch(ID_PATTERN, conv_id):
            raise _not_found(conv_id)
        return [k.format(owner=owner, id=conv_id) for k in (CONVERSATION_KEY, ITEMS_KEY, ORDER_KEY, ANSWERS_KEY, REPLACED_KEY)]

    def check_items(self, items: Sequence[AnyItem], param: str = "items") -> None:
        """Bounds on what a request may store (a 400 before anything is written)."""
        for n, item in enumerate(items):
            if len(item.text()) > self._max_chars:
                field = {"message": "content", "function_call": "arguments", "function_call_output": "output"}[item.type]
                raise HearthError(400, f"{param}[{n}]: an item's {field} is at most {self._max_chars} characters.", code="string_above_max_length", param=f"{param}.{n}.{field}")

    async def _write(
        self, owner: str, conv_id: str, items: Sequence[AnyItem], *, create: bool = False, created_at: int = 0,
        metadata: dict[str, str] | None = None, job_id: str = "", item_cap: bool = True, activity_ms: int = 0,
        answering: str = "", replace_from: str = "", follows: str | None = None,
    ) -> int | None:
        """Runs the write script; the number of items added, or None when the conversation is absent."""
        keys = [*self._keys(owner, conv_id), INDEX_KEY.format(owner=owner)]
        args: list[str | int] = [
            conv_id, int(create), created_at, json.dumps(metadata or {}), self._max_conversations,
            self._max_items if item_cap else 0, job_id, "" if activity_ms else _title(items),
            activity_ms or _now_ms(), "keep" if activity_ms else "top", answering, replace_from,
            int(follows is not None), follows or "",
        ]
        for item in items:
            args += [item.id, item.model_dump_json()]
        result = await self._write_script(keys=keys, args=args)
        outcome = result[0].decode()
        if outcome == "missing":
            return None
        if outcome == "too_many_conversations":
            raise _too_many("conversations per user", self._max_conversations, None)
        if outcome == "too_many_items":
            raise _too_many("messages per conversation", self._max_items, "items")
        if outcome == "busy":
            raise HearthError(409, "An answer is still being written in this conversation; wait for it or stop it.",
                              code="conversation_busy", param="conversation")
        if outcome == "changed":
            raise HearthError(409, "The conversation changed while this turn was being prepared (another tab or client wrote "
                                   "to it); read it again and resend.", code="conversation_changed", param="conversation")
        return int(result[1])

    async def create(self, owner: str, metadata: dict[str, str] | None, items: Sequence[AnyItem]) -> Conversation:
        self.check_items(items)
        conv_id, created_at = new_id("conv"), int(time.time())
        await self._write(owner, conv_id, items, create=True, created_at=created_at, metadata=metadata)
        return await self.get(owner, conv_id)

    async def get(self, owner: str, conv_id: str) -> Conversation:
        fields = ["created_at", "metadata", "answering"]
        created_at, metadata, answering = await self._redis.hmget(self._keys(owner, conv_id)[0], fields)
        if created_at is None or metadata is None:
            raise _not_found(conv_id)
        return Conversation(id=conv_id, created_at=int(created_at), metadata=json.loads(metadata),
                            hearth_job_id=text(answering) if answering else None)

    async def update(self, owner: str, conv_id: str, metadata: dict[str, str]) -> Conversation:
        """Replaces the metadata, as OpenAI does; renaming is setting `title`."""
        if not await self._update_script(keys=self._keys(owner, conv_id)[:1], args=[json.dumps(metadata)]):
            raise _not_found(conv_id)
        return await self.get(owner, conv_id)

    async def delete(self, owner: str, conv_id: str) -> list[AnyItem]:
        """Deletes the conversation; the items it held (those a turn in progress replaced too)."""
        _, items, _, _, replaced = keys = self._keys(owner, conv_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hvals(items)
            pipe.zrange(replaced, 0, -1)
            pipe.delete(*keys)
            pipe.zrem(INDEX_KEY.format(owner=owner), conv_id)
            held, put_aside, deleted, _ = await pipe.execute()
        if not deleted:
            raise _not_found(conv_id)
        return [ITEM.validate_json(raw) for raw in [*held, *put_aside]]

    async def add_items(self, owner: str, conv_id: str, items: Sequence[AnyItem], answering: str = "",
                        replace_from: str = "", follows: str | None = None) -> list[AnyItem]:
        """Appends messages (a chat's new user turn, or the client's own items): 400 past the
        caps, 404 if the conversation is absent. The first user message names the conversation
        unless it has a title. A turn's question also marks `answering`, the job that writes its
        answer (see `Conversation.hearth_job_id`), in the same step: 409 `conversation_busy`, and
        nothing stored, while another answer is in progress. It may replace the item
        `replace_from` and all after it (kept aside until the turn stands: `withdraw` puts them
        back), and insist that the item it follows is `follows` ('' for none): 409
        `conversation_changed`, and nothing stored, when another writer came between."""
        self.check_items(items)
        if await self._write(owner, conv_id, items, answering=answering, replace_from=replace_from, follows=follows) is None:
            raise _not_found(conv_id)
        return list(items)

    async def record_answer(self, owner: str, conv_id: str, job_id: str, text: str, status: Status = "completed",
                            calls: Sequence[ToolCall] = (), citations: Sequence[Citation] = ()) -> list[AnyItem] | None:
        """Appends the model's answer to job `job_id` (its text as a message, with the documents
        it was given from, and its calls as function call items), once: a second call for the
        same job adds nothing (None). Also None when the conversation was deleted meanwhile. An
        answer to a message that was accepted is kept even past the item cap, and its text is not cut."""
        items: list[AnyItem] = [message("assistant", text, status, citations=citations)] if text else []
        items += [call_item(call, call_item_id(job_id, n), status) for n, call in enumerate(calls)]
        added = await self._write(owner, conv_id, items, job_id=job_id, item_cap=False)
        return items if added else None

    async def answering(self, owner: str, conv_id: str) -> tuple[str, float] | None:
        """The job marked as writing the conversation's answer, and how long ago (s) it was
        marked; None when no answer is in progress (or there is no such conversation)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self._keys(owner, conv_id)[0], ["answering", "answering_ms"])
            pipe.time()  # the clock the mark was set by
            (job_id, marked_ms), (seconds, micros) = await pipe.execute()
        return (text(job_id), seconds + micros / 1e6 - int(marked_ms or 0) / 1000) if job_id else None

    async def withdraw(self, owner: str, conv_id: str, job_id: str) -> list[AnyItem]:
        """A turn that never happened (its job was never queued): in one step, if job `job_id`
        still holds the mark, its question goes, what it replaced comes back, and the mark goes.
        The question's items deleted."""
        conv, items, order, _, replaced = self._keys(owner, conv_id)
        return [ITEM.validate_json(raw) for raw in await self._withdraw_script(keys=[conv, items, order, replaced], args=[job_id])]

    async def turn(self, owner: str, conv_id: str, job_id: str) -> tuple[list[AnyItem], list[AnyItem]] | None:
        """The turn job `job_id` is marked as answering: its own items (its question) and those
        it replaces; None when the mark is not the job's (any more)."""
        conv, items, _, _, replaced = self._keys(owner, conv_id)
        out = await self._turn_script(keys=[conv, replaced, items], args=[job_id])
        if not out:
            return None
        own, raws = int(out[0]), out[1:]
        return [ITEM.validate_json(raw) for raw in raws[:own]], [ITEM.validate_json(raw) for raw in raws[own:]]

    async def answered(self, owner: str, conv_id: str, job_id: str) -> None:
        """Job `job_id`'s answer is filed (or there was none): no answer is in progress now, and
        what its turn replaced is dropped."""
        keys = self._keys(owner, conv_id)
        await self._unmark_script(keys=[keys[0], keys[4]], args=[job_id])

    async def missing(self, owner: str, conv_id: str, item_ids: Sequence[str]) -> set[str]:
        """Those of `item_ids` the conversation no longer holds (deleted, or the conversation);
        one a turn under way replaces is still held (that turn may be withdrawn)."""
        if not item_ids:
            return set()
        _, items, _, _, replaced = self._keys(owner, conv_id)
        return set(texts(await self._missing_script(keys=[items, replaced], args=list(item_ids))))

    async def items(self, owner: str, conv_id: str, after: str | None, limit: int, order: Literal["asc", "desc"]) -> tuple[list[AnyItem], bool]:
        """A page of items and whether more follow; 400 when `after` is no item of it."""
        keys = self._keys(owner, conv_id)
        result = await self._items_script(keys=[keys[0], keys[2], keys[1]], args=[after or "", -1 if limit < 0 else limit + 1, order])
        outcome = result[0].decode()
        if outcome == "missing":
            raise _not_found(conv_id)
        if outcome == "bad_after":
            raise HearthError(400, f"No item {after!r} in conversation {conv_id!r}.", param="after")
        found = [ITEM.validate_json(raw) for raw in result[1:]]
        return (found, False) if limit < 0 else (found[:limit], len(found) > limit)

    async def item(self, owner: str, conv_id: str, item_id: str) -> AnyItem:
        raw = await self._redis.hget(self._keys(owner, conv_id)[1], item_id)
        if raw is None:
            await self.get(owner, conv_id)  # the conversation's 404 before the item's
            raise item_not_found(conv_id, item_id)
        return ITEM.validate_json(raw)

    async def delete_item(self, owner: str, conv_id: str, item_id: str) -> tuple[Conversation, AnyItem]:
        """Deletes the item; the conversation after, and the item."""
        deleted = await self.item(owner, conv_id, item_id)
        _, items, order, *_ = self._keys(owner, conv_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(items, item_id)
            pipe.zrem(order, item_id)
            await pipe.execute()
        return await self.get(owner, conv_id), deleted

    async def _rank_after(self, owner: str, after: str | None) -> int:
        """Where a page that follows the conversation `after` starts in the activity order."""
        if not after:
            return 0
        rank = await self._redis.zrevrank(INDEX_KEY.format(owner=owner), after)
        if not isinstance(rank, int):  # None: no such conversation (a list only comes WITHSCORE)
            raise HearthError(400, f"No conversation {after!r} to list after.", param="after")
        return rank + 1

    async def _ids(self, owner: str, start: int, count: int) -> list[str]:
        """Conversation ids, most recently active first, from rank `start`."""
        return members(await self._redis.zrevrange(INDEX_KEY.format(owner=owner), start, start + count - 1))

    async def _load(self, owner: str, ids: Sequence[str], with_items: bool) -> list[ExportedConversation]:
        """Conversations (with their items, oldest first, if asked) in one round trip; those
        deleted meanwhile are left out."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for conv_id in ids:
                conv, items, order, *_ = self._keys(owner, conv_id)
                pipe.hmget(conv, ["created_at", "metadata"])
                pipe.zscore(INDEX_KEY.format(owner=owner), conv_id)
                if with_items:
                    pipe.zrange(order, 0, -1)
                    pipe.hgetall(items)
            replies = await pipe.execute()
        step = 4 if with_items else 2
        loaded = []
        for n, conv_id in enumerate(ids):
            (created_at, metadata), score, *rest = replies[n * step : (n + 1) * step]
            if created_at is None:
                continue
            messages = [ITEM.validate_json(rest[1][i]) for i in rest[0] if i in rest[1]] if with_items else []
            loaded.append(ExportedConversation(id=conv_id, created_at=int(created_at), metadata=json.loads(metadata),
                                               last_active_ms=int(score or 0), items=messages))
        return loaded

    async def recent(self, owner: str, after: str | None, limit: int) -> tuple[list[Conversation], bool]:
        """The owner's conversations, most recently active first (Hearth's own: OpenAI has no list)."""
        ids = await self._ids(owner, await self._rank_after(owner, after), limit + 1)
        found = [Conversation(id=c.id, created_at=c.created_at, metadata=c.metadata) for c in await self._load(owner, ids[:limit], False)]
        return found, len(ids) > limit

    async def search(self, owner: str, query: str, after: str | None, limit: int) -> tuple[list[Conversation], bool]:
        """Conversations whose title or any message contains `query` (case-insensitive), most
        recently active first; reads SCAN_CHUNK conversations per round trip until a page is full."""
        needle, start = query.casefold(), await self._rank_after(owner, after)
        found: list[Conversation] = []
        while len(found) <= limit:
            ids = await self._ids(owner, start, SCAN_CHUNK)
            start += len(ids)
            for conv in await self._load(owner, ids, True):
                texts = [conv.metadata.get(TITLE_KEY, ""), *(item.text() for item in conv.items)]
                if any(needle in text.casefold() for text in texts):
                    found.append(Conversation(id=conv.id, created_at=conv.created_at, metadata=conv.metadata))
            if len(ids) < SCAN_CHUNK:
                break
        return found[:limit], len(found) > limit

    async def export(self, owner: str) -> list[ExportedConversation]:
        """Every conversation of the owner with its items, most recently active first."""
        ids = members(await self._redis.zrevrange(INDEX_KEY.format(owner=owner), 0, -1))
        exported = []
        for start in range(0, len(ids), SCAN_CHUNK):
            exported += await self._load(owner, ids[start : start + SCAN_CHUNK], True)
        return exported

    async def exported(self, owner: str, conv_id: str) -> ExportedConversation:
        """One conversation with its items, as in the export file."""
        self._keys(owner, conv_id)
        found = await self._load(owner, [conv_id], True)
        if not found:
            raise _not_found(conv_id)
        return found[0]

    async def import_(self, owner: str, conversations: Sequence[ExportedConversation]) -> tuple[int, int]:
        """Stores exported conversations under their own ids; those already here only gain the
        items they lack, so importing twice adds nothing. Every bound is checked before the
        first write. Returns (conversations created, items added)."""
        for n, conv in enumerate(conversations):
            if len(conv.items) > self._max_items:
                raise _too_many("messages per conversation", self._max_items, f"conversations.{n}.items")
            self.check_items(conv.items, f"conversations[{n}].items")
        async with self._redis.pipeline(transaction=False) as pipe:
            for conv in conversations:
                pipe.exists(self._keys(owner, conv.id)[0])
            present = await pipe.execute()
        new = {c.id for c, here in zip(conversations, present) if not here}
        if len(new) + await self._redis.zcard(INDEX_KEY.format(owner=owner)) > self._max_conversations:
            raise _too_many("conversations per user", self._max_conversations, "conversations")
        added = 0
        for conv in conversations:
            added += await self._write(owner, conv.id, conv.items, create=True, created_at=conv.created_at,
                                       metadata=conv.metadata, activity_ms=conv.last_active_ms or _now_ms()) or 0
        return len(new), added

    async def defaults(self, owner: str) -> dict[str, str]:
        """The metadata the owner's new chats start with (their settings: a chat app's to read)."""
        stored = await self._redis.get(DEFAULTS_KEY.format(owner=owner))
        return json.loads(stored) if stored else {}

    async def set_defaults(self, owner: str, metadata: dict[str, str]) -> None:
        await self._redis.set(DEFAULTS_KEY.format(owner=owner), json.dumps(metadata))

    async def count_owner(self, owner: str) -> int:
        """How many conversations `owner` keeps (what revoking them would delete)."""
        return int(await self._redis.zcard(INDEX_KEY.format(owner=owner)))

    async def delete_owner(self, owner: str) -> int:
        """Deletes every conversation of `owner`, and their defaults (their account is being deleted)."""
        index = INDEX_KEY.format(owner=owner)
        ids = members(await self._redis.zrange(index, 0, -1))
        async with self._redis.pipeline(transaction=False) as pipe:
            for conv_id in ids:
                pipe.delete(*self._keys(owner, conv_id))
            pipe.delete(index, DEFAULTS_KEY.format(owner=owner))
            await pipe.execute()
        return len(ids)
