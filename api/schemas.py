"""OpenAI request bodies, validated once; unknown fields are ignored as OpenAI-compatible
servers do. Bounds fixed by OpenAI's API are here; those an operator sets are checked by
api.limits."""

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from hearth.contract import Message, SamplingParams

INT32_MAX = 2**31 - 1  # token counts and ids: llama.cpp's int32
INT64 = {"ge": -(2**63), "le": 2**63 - 1}  # OpenAI's seed
NAME_CHARS = 256  # model and user names
MAX_STOPS = 4  # OpenAI's


def valid_unicode(text: str) -> str:
    """JSON may escape a lone surrogate ("\\ud800"): no text, and it cannot be encoded for
    Redis or the tokenizer. Refused here, naming the field, rather than failing later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate escape (such as \\ud800), which is not valid Unicode text") from None
    return text


Text = Annotated[str, AfterValidator(valid_unicode)]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str  # checked by ChatMessage, so an error names the message's content


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    @field_validator("content")
    @classmethod
    def _valid_text(cls, content: str | list[TextPart] | None) -> str | list[TextPart] | None:
        # Here rather than `Text` in the union, whose errors would name the union's branch.
        for text in [content] if isinstance(content, str) else [part.text for part in content or []]:
            valid_unicode(text)
        return content

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


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
    n: Annotated[int, Field(ge=1, le=1)] = 1
    stop: str | list[str] | None = None
    seed: Annotated[int, Field(**INT64)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    user: Annotated[Text, Field(max_length=NAME_CHARS)] | None = None
    # Hearth's own: store this turn (the last user message, then the finished answer) in the
    # caller's conversation, whoever is watching; other servers ignore it.
    conversation: Annotated[Text, Field(max_length=NAME_CHARS)] | None = None

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
        )

    def contract_messages(self) -> list[Message]:
        return [Message(role=m.role, content=m.text()) for m in self.messages]
