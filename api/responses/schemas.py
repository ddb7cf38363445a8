"""`POST /v1/responses` request bodies, validated once, and their translation into the chat
request that Hearth queues (a response is a chat job: api.chat.service).

Each field of OpenAI's Responses request is honoured (a field of `ResponseCreateRequest`),
refused (`REFUSED`, by the same mechanism as chat's: api.chat.schemas) or ignored (`IGNORED`)."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from api.chat.schemas import (
    INT32_MAX,
    NAME_CHARS,
    ChatCompletionRequest,
    Refusal,
    Text,
    empty,
    refusing,
)
from api.chat.structured import PARAM as CHAT_SCHEMA_PARAM
from api.chat.structured import JsonObjectFormat, JsonSchemaSpec, TextFormat
from api.conversations.schemas import Id, InputFile, InputMessage, InputText, MessageItem, Metadata, OutputText, new_id
from api.documents.parts import FileInput, check_file
from api.errors import HearthError
from api.responses.store import StoredResponse
from hearth.contract import Message
from hearth.documents import DocumentRef

SCHEMA_PARAM = "text.format.schema"

REFUSED: dict[str, Refusal] = {
    "tools": Refusal("tool calling is not supported", empty),
    "tool_choice": Refusal("tool calling is not supported", lambda v: v in (None, "none", "auto")),
    "reasoning": Refusal("reasoning is not supported: Hearth's models answer directly", lambda v: v in (None, {})),
    "include": Refusal("Hearth has no additional output data to include", empty),
    "top_logprobs": Refusal("log probabilities are not returned", lambda v: v in (None, 0)),
    "prompt": Refusal("stored prompt templates are not supported"),
    "moderation": Refusal("moderation is not available"),
    "context_management": Refusal("context compaction is not supported", empty),
}
# Accepted and ignored: OpenAI's caching, billing, tiers and transport options, and tool or
# image settings that are moot while tools and images are refused. `truncation`: Hearth trims
# the oldest history of a chat that outgrows the window either way.
IGNORED = frozenset({
    "user", "safety_identifier", "service_tier", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "parallel_tool_calls", "max_tool_calls", "stream_options", "truncation", "access_programs", "background_options",
    "image",
})


class JsonSchemaTextFormat(JsonSchemaSpec):
    """Responses' `text.format` of type json_schema: chat's `json_schema`, flattened."""

    type: Literal["json_schema"]


TextFormatParam = Annotated[TextFormat | JsonObjectFormat | JsonSchemaTextFormat, Field(discriminator="type")]


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: TextFormatParam | None = None


class ConversationRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Id


def _text_items(items: Any) -> Any:
    """A string is one user message; other item types, and parts other than text, are
    refused by name (as a failed union their errors would name a branch instead)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    for n, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            continue
        if item.get("type", "message") != "message":
            raise ValueError(f"item {n}: input items of type {item['type']!r} are not supported: Hearth takes messages only")
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind not in ("input_text", "output_text", "input_file"):
                raise ValueError(f"item {n}: content parts of type {kind!r} are not supported: Hearth reads text and files (input_file)")
            if kind == "input_file":
                check_file(part)
    return items


class FileInputPart(FileInput):
    """Responses' `input_file` part as a request sends it: an uploaded file's `file_id`, or the
    bytes as `file_data`."""

    type: Literal["input_file"]


ResponsePart = Annotated[InputText | OutputText | FileInputPart, Field(discriminator="type")]


class ResponseInput(InputMessage):
    content: str | Annotated[list[ResponsePart], Field(min_length=1)]  # type: ignore[assignment]  # a wider part type than a stored item's

    def to_item(self, documents: list[DocumentRef] | None = None) -> MessageItem:
        """The message as an item keeps it: each file part (in order) as the document read from
        it; without `documents`, its text parts alone."""
        if isinstance(self.content, str):
            return super().to_item()
        found = iter(documents or [])
        content: list[InputText | OutputText | InputFile] = []
        for part in self.content:
            if not isinstance(part, FileInputPart):
                content.append(part)
            elif documents is not None:
                content.append(InputFile.of(next(found)))
        return MessageItem(id=new_id("msg"), role=self.role, content=content)


class ResponseCreateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Annotated[Text, Field(max_length=NAME_CHARS)] = ""
    input: Annotated[list[ResponseInput], Field(min_length=1)]
    instructions: Text | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    background: bool = False
    metadata: Metadata | None = None
    previous_response_id: Annotated[str, Field(max_length=NAME_CHARS)] | None = None
    conversation: Id | ConversationRef | None = None
    # Refused unless harmless (REFUSED); declared so that an error names the field.
    tools: Any = None
    tool_choice: Any = None
    reasoning: Any = None
    include: Any = None
    top_logprobs: Any = None
    prompt: Any = None
    moderation: Any = None
    context_management: Any = None

    _refused = refusing(REFUSED)
    _text_items = field_validator("input", mode="before")(classmethod(lambda cls, items: _text_items(items)))

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id if isinstance(self.conversation, ConversationRef) else self.conversation

    def file_parts(self) -> list[list[tuple[str, FileInput]]]:
        """Each input message's file parts, with the field that holds each (for errors)."""
        return [[(f"input.{n}.content.{j}", p) for j, p in enumerate(m.content) if isinstance(p, FileInputPart)]
                if isinstance(m.content, list) else [] for n, m in enumerate(self.input)]

    def stored(self, job_id: str, created_at: int, model: str, history: list[Message], documents: list[list[DocumentRef]]) -> StoredResponse:
        """What is kept of the request, to answer for the response later; its file parts as the
        `documents` read from them (one list per input message)."""
        fmt = self.text.format if self.text else None
        return StoredResponse(
            job_id=job_id, created_at=created_at, model=model, instructions=self.instructions,
            input=[m.to_item(refs) for m, refs in zip(self.input, documents)], history=history, max_output_tokens=self.max_output_tokens,
            temperature=self.temperature, top_p=self.top_p, text_format=fmt.model_dump(by_alias=True) if fmt else {"type": "text"},
            metadata=self.metadata or {}, previous_response_id=self.previous_response_id, conversation=self.conversation_id,
            background=self.background,
        )

    def input_messages(self) -> list[Message]:
        return [Message(role=m.role, content=m.to_item().text()) for m in self.input]

    def to_chat(self, history: list[Message]) -> ChatCompletionRequest:
        """The chat Hearth queues: the instructions, `history` (earlier turns), then the input."""
        fmt = self.text.format if self.text else None
        if isinstance(fmt, JsonSchemaTextFormat):
            response_format: dict[str, Any] | None = {"type": "json_schema", "json_schema": fmt.model_dump(by_alias=True, exclude={"type"})}
        else:
            response_format = fmt.model_dump() if fmt else None
        system = [Message(role="system", content=self.instructions)] if self.instructions else []
        messages = [m.model_dump() for m in [*system, *history, *self.input_messages()]]
        try:
            return ChatCompletionRequest.model_validate({
                "model": self.model, "messages": messages, "max_tokens": self.max_output_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "response_format": response_format,
            })
        except ValidationError as exc:
            first = exc.errors()[0]
            raise HearthError(400, f"input: {first['msg']}", param="input") from None


def as_responses_error(exc: HearthError) -> HearthError:
    """A chat check's error, naming the Responses field it is about (`input` for chat's
    `messages`, `text.format.schema` for its `response_format`'s schema)."""
    param = exc.param or ""
    if param.startswith("messages"):
        renamed = "input"
    elif param.startswith(CHAT_SCHEMA_PARAM):
        renamed = SCHEMA_PARAM
    elif param == "max_tokens":
        renamed = "max_output_tokens"
    else:
        return exc
    message = exc.message.replace(param, renamed, 1) if exc.message.startswith(param) else exc.message
    return HearthError(exc.status, message, exc.type, exc.code, renamed, exc.headers)
