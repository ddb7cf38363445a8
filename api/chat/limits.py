"""The operator's limits on one chat request (settings), and what the chosen worker can take:
checked after parsing, before anything is queued, each refusal a 400 naming the field."""

from api.chat.schemas import ChatCompletionRequest
from api.chat.structured import grammar_schema
from api.errors import HearthError
from api.settings import ApiSettings
from hearth.heartbeat import WorkerInfo


def _refuse(param: str, message: str) -> HearthError:
    return HearthError(400, f"{param}: {message}", param=param)


def check_request(body: ChatCompletionRequest, settings: ApiSettings) -> None:
    if len(body.messages) > settings.max_messages:
        raise _refuse("messages", f"at most {settings.max_messages} messages are allowed, got {len(body.messages)}.")
    for i, message in enumerate(body.messages):
        if len(message.text()) > settings.max_message_chars:
            raise _refuse(f"messages.{i}.content", f"a message may have at most {settings.max_message_chars} characters.")
    for stop in body.stops():
        if len(stop) > settings.max_stop_chars:
            raise _refuse("stop", f"a stop string may have at most {settings.max_stop_chars} characters.")
    if len(body.logit_bias or {}) > settings.max_logit_bias:
        raise _refuse("logit_bias", f"at most {settings.max_logit_bias} token ids may be biased.")
    offered = body.functions if body.legacy_functions else body.tools
    if len(offered or []) > settings.max_tools:
        field = "functions" if body.legacy_functions else "tools"
        raise _refuse(field, f"at most {settings.max_tools} functions may be offered, got {len(offered or [])}.")
    # A schema that cannot be enforced is refused here, before anything is queued.
    structured = grammar_schema(body.response_format) is not None
    if structured and body.stops():
        raise _refuse("stop", "stop strings cannot be combined with a JSON response_format: one could cut the JSON "
                              "short. The answer ends when its JSON is complete.")
    if body.tool_use() is not None:
        if body.stops():
            raise _refuse("stop", "stop strings cannot be combined with tools: one could cut a call's arguments short.")
        if structured:
            raise _refuse("response_format", "a JSON response_format cannot be combined with tools (unless tool_choice is none).")
    if body.conversation is not None:
        _check_turn(body)
    elif body.replace_from is not None:
        raise _refuse("replace_from", "it names a message of a conversation to replace: it needs `conversation`.")


def _check_turn(body: ChatCompletionRequest) -> None:
    """A turn stored in a conversation continues the conversation's stored messages: the request
    carries its instructions and what is new only (the question, or the results of the calls
    the last answer made), so nothing is counted twice."""
    if body.messages[-1].role not in ("user", "tool"):
        raise HearthError(400, "A turn stored in a conversation ends with the user's message, or with tool messages "
                               "(the results of the calls its last answer made).", param="messages")
    earlier = next((n for n, m in enumerate(body.messages[:body.turn_start()]) if m.role not in ("system", "developer")), None)
    if earlier is not None:
        raise _refuse(f"messages.{earlier}", "a turn stored in a conversation carries its instructions (system, developer) and "
                                             "what is new only (the user message, or tool messages): the conversation's stored "
                                             "messages are its history. Add earlier turns with the items API, or leave out `conversation`.")


def check_for_worker(body: ChatCompletionRequest, worker: WorkerInfo) -> None:
    """Token ids exist only within the model's vocabulary (unknown, 0, for a worker too old
    to publish it)."""
    outside = [key for key in body.logit_bias or {} if int(key) >= worker.n_vocab > 0]
    if outside:
        raise _refuse("logit_bias", f"token id {outside[0]} is outside the model's vocabulary of {worker.n_vocab} tokens.")
