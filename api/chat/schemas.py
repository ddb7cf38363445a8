"""OpenAI request bodies, validated once. Bounds fixed by OpenAI's API are here; those an
operator sets are checked by api.chat.limits.

Each field of OpenAI's chat request is honoured (a field of `ChatCompletionRequest`), refused
(`REFUSED`: it would change what the caller gets back, so answering as if it were absent would
mislead; a value that asks for nothing, such as `n: 1` or `tools: []`, passes), or ignored
(`IGNORED`: hints and bookkeeping that do not change the answer). Fields unknown to OpenAI are
ignored too, as OpenAI-compatible servers do."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from api.chat.structured import ResponseFormat, grammar_schema
from api.chat.text import Text as Text  # re-exported: other request schemas take it from here
from api.chat.text import valid_unicode
from api.chat.tools import CallFunction, CallIn, FunctionCallChoice, FunctionDef, FunctionTool, ToolChoice, history, tool_use
from api.documents.parts import ChatFilePart, FileInput, check_file
from hearth.contract import Message, SamplingParams, ToolUse

INT32_MAX = 2**31 - 1  # token counts and ids: llama.cpp's int32
INT64 = {"ge": -(2**63), "le": 2**63 - 1}  # OpenAI's seed
NAME_CHARS = 256  # model and user names
MAX_STOPS = 4  # OpenAI's




@dataclass(frozen=True)
class Refusal:
    reason: str
    harmless: Callable[[Any], bool] = lambda value: value is None


def empty(value: Any) -> bool:
    return value is None or value == []


def refusing(table: dict[str, Refusal]) -> Any:
    """The field validator that refuses `table`'s fields unless their value is harmless;
    assign it in the body of a request model that declares those fields (as `Any = None`), so
    an error names the field."""

    def refuse(cls: type, value: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        if not table[info.field_name].harmless(value):
            raise ValueError(table[info.field_name].reason)
        return value

    return field_validator(*table)(classmethod(refuse))


REFUSED: dict[str, Refusal] = {
    "n": Refusal("Hearth generates one choice per request; n must be 1", lambda v: v in (None, 1)),
    "logprobs": Refusal("log probabilities are not returned", lambda v: v in (None, False)),
    "top_logprobs": Refusal("log probabilities are not returned", lambda v: v in (None, 0)),
    "audio": Refusal("audio output is not supported"),
    "modalities": Refusal("only text output is supported", lambda v: v is None or v == ["text"]),
    "web_search_options": Refusal("web search is not available"),
    "moderation": Refusal("moderation is not available"),
}
# Accepted and ignored: they steer OpenAI's own caching, billing, storage or reasoning, or
# only speed (`prediction`), and the answer is what it would be without them.
IGNORED = frozenset({
    "user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning_effort", "verbosity", "prediction",
})


class TextPart(BaseModel):
    type: Literal["text"]
    text: str  # checked by ChatMessage, so an error names the message's content


ContentPart = Annotated[TextPart | ChatFilePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[CallIn] | None = None  # an assistant's calls
    tool_call_id: Text | None = None  # a tool message: the call it answers
    function_call: CallFunction | None = None  # legacy: an assistant's one call
    name: Text | None = None  # legacy: the function a `function` message answers

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, content: Any) -> Any:
        # Named here: as a failed union its error would read "should be a valid string".
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("text", "file") and isinstance(kind, str):
                raise ValueError(f"content parts of type {kind!r} are not supported: Hearth reads text and files (type 'file')")
            if kind == "file":
                check_file(part.get("file"))
        return content

    @field_validator("content")
    @classmethod
    def _valid_text(cls, content: str | list[ContentPart] | None) -> str | list[ContentPart] | None:
        # Here rather than `Text` in the union, whose errors would name the union's branch.
        for text in [content] if isinstance(content, str) else [part.text for part in content or [] if isinstance(part, TextPart)]:
            valid_unicode(text)
        return content

    @model_validator(mode="after")
    def _files_from_users(self) -> "ChatMessage":
        if self.role != "user" and self.files():
            raise ValueError("only a user's message may attach files")
        return self

    def text(self) -> str:
        """Its text parts (files go with it as documents: api.documents)."""
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if isinstance(part, TextPart))
        return self.content or ""

    def files(self) -> list[tuple[int, FileInput]]:
        """Its file parts, with their index among its content parts."""
        return [(j, part.file) for j, part in enumerate(self.content) if isinstance(part, ChatFilePart)] if isinstance(self.content, list) else []


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Annotated[Text, Field(max_length=NAME_CHARS)] = ""
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    # maxItems in the schema only: the validator below names the error (see there).
    stop: str | Annotated[list[str], Field(json_schema_extra={"maxItems": MAX_STOPS})] | None = None
    seed: Annotated[int, Field(**INT64)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    user: Annotated[Text, Field(max_length=NAME_CHARS)] | None = None  # checked, then ignored
    response_format: ResponseFormat | None = None
    # Hearth's own: store this turn (the last user message, then the finished answer) in the
    # caller's conversation, whoever is watching, whose stored messages are its history (the
    # request carries instructions and the new user message only); other servers ignore it.
    conversation: Annotated[Text, Field(max_length=NAME_CHARS)] | None = None
    # Hearth's own, with `conversation`: the stored user message this turn's question replaces,
    # with everything after it (regenerate: the same question again; edit: another one).
    replace_from: Annotated[Text, Field(max_length=NAME_CHARS)] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = None  # legacy: tools of one call
    function_call: FunctionCallChoice | None = None  # legacy: tool_choice
    # Refused unless harmless (REFUSED); declared so that an error names the field.
    n: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    audio: Any = None
    modalities: Any = None
    web_search_options: Any = None
    moderation: Any = None

    _refused = refusing(REFUSED)

    @field_validator("stop")
    @classmethod
    def _valid_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        # Checked here, not as the list's max_length: an error in one branch of the union
        # would be reported under the other's name ("stop.str").
        if isinstance(stop, list) and len(stop) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings are allowed")
        for text in [stop] if isinstance(stop, str) else stop or []:
            valid_unicode(text)
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key in bias or {}:
            # ASCII only: str.isdigit() also accepts "²", which int() refuses.
            if not (key.isascii() and key.isdigit() and int(key) <= INT32_MAX):
                raise ValueError(f"keys must be token ids, got {key!r}")
        return bias

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else (self.stop or [])

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stops(),
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias={int(k): v for k, v in (self.logit_bias or {}).items()},
            json_schema=grammar_schema(self.response_format),
        )

    def tool_use(self) -> ToolUse | None:
        return tool_use(self.tools, self.tool_choice, self.parallel_tool_calls, self.functions, self.function_call)

    @property
    def legacy_functions(self) -> bool:
        """Answered as the legacy API did: `function_call` rather than `tool_calls`."""
        return self.functions is not None

    def file_parts(self) -> list[list[tuple[str, FileInput]]]:
        """Each message's file parts, with the field that holds each (for errors)."""
        return [[(f"messages.{i}.content.{j}.file", part) for j, part in m.files()] for i, m in enumerate(self.messages)]

    def turn_start(self) -> int:
        """Where a conversation turn's new messages start: the tool messages it ends with (the
        results of the calls its last stored answer made), else its last (the question)."""
        n = len(self.messages)
        while n > 0 and self.messages[n - 1].role == "tool":
            n -= 1
        return min(n, len(self.messages) - 1)

    def contract_messages(self, made: Iterable[str] = ()) -> list[Message]:
        """The messages, legacy `function_call`s and `function` results as calls and tool
        messages (a result answers the latest call of its function); 400 for a tool message
        that answers no earlier call (nor one of the ids `made` before them: a conversation's)."""
        chat: list[tuple[str, str, list[CallIn], str | None]] = []
        legacy: dict[str, str] = {}  # function name -> id given to its latest legacy call
        for i, m in enumerate(self.messages):
            calls = list(m.tool_calls or [])
            if m.function_call is not None:
                legacy[m.function_call.name] = f"call_{i}"
                calls.append(CallIn(id=f"call_{i}", function=m.function_call))
            if m.role == "function":
                chat.append(("tool", m.text(), [], legacy.get(m.name or "")))
            else:
                chat.append((m.role, m.text(), calls, m.tool_call_id))
        return history(chat, made)
