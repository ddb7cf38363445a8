"""Turn chat messages into prompt tokens with the GGUF's own chat template.

Two traps this module exists for:
- Some templates (Mistral Instruct) raise on a `system` role or on non-alternating turns, and
  llama-cpp-python's built-in `mistral-instruct` format silently drops system messages. We
  probe the template once and, where it needs it, fold the system prompt into the first user
  turn and merge consecutive same-role messages, so the system prompt always reaches the model.
- Rendering then tokenizing the whole prompt with special tokens parsed would turn user text
  such as `<|im_end|>` into real control tokens. Message contents are rendered as sentinels
  and tokenized as plain text; only the template's own text may contain special tokens.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hearth.contract import Message

Tokenize = Callable[[bytes, bool], list[int]]  # (text, parse_special) -> tokens

# Used when a GGUF carries no template: ChatML, what most small instruct models speak.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_SENTINEL = "\x1ehearth{}\x1e"
_SENTINEL_RE = re.compile("\x1ehearth(\\d+)\x1e")


def _raise(message: str) -> None:
    raise TemplateError(message)


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


class ChatTemplate:
    def __init__(self, source: str | None, bos_token: str, eos_token: str, tokenize: Tokenize):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(source or CHATML)
        self._bos, self._eos = bos_token, eos_token
        self._tokenize = tokenize
        self.folds_system = not self._accepts([Turn("system", "s"), Turn("user", "u")])
        self.merges_turns = not self._accepts([Turn("user", "u"), Turn("user", "u")])
        self.needs_user_first = not self._accepts([Turn("assistant", "a"), Turn("user", "u")])
        self.turn_markers = self._turn_markers()

    def _render(self, turns: Sequence[Turn]) -> str:
        return self._template.render(
            messages=[{"role": t.role, "content": t.content} for t in turns],
            add_generation_prompt=True,
            bos_token=self._bos,
            eos_token=self._eos,
        )

    def _accepts(self, turns: Sequence[Turn]) -> bool:
        try:
            self._render(turns)
        except TemplateError:
            return False
        return True

    def _turn_markers(self) -> list[str]:
        """The text that opens a new turn (`[INST]`, `<|im_start|>user`): stop strings, so a
        model that writes one as plain text ends its answer there instead of rambling on into
        a made-up next turn. (As special tokens they are never printed at all.)"""
        rendered = self._render([Turn("user", _SENTINEL.format(0)), Turn("assistant", _SENTINEL.format(1)), Turn("user", _SENTINEL.format(2))])
        between = rendered.partition(_SENTINEL.format(1))[2].partition(_SENTINEL.format(2))[0]
        if self._eos:  # the end of the answer itself, not the start of a new turn
            between = between.replace(self._eos, " ")
        # A marker has punctuation: a plain word such as "user" would cut ordinary answers.
        return [piece for piece in between.split() if len(piece) >= 3 and not piece.isalnum()]

    def normalize(self, messages: Sequence[Message]) -> list[Turn]:
        """Messages reshaped into what this template accepts, losing no content."""
        turns = [Turn("system" if m.role == "developer" else m.role, m.content) for m in messages]
        turns = [Turn("user", t.content) if t.role == "tool" else t for t in turns]
        if self.folds_system:
            system = "\n\n".join(t.content for t in turns if t.role == "system")
            turns = [t for t in turns if t.role != "system"]
            if system:
                first_user = next((i for i, t in enumerate(turns) if t.role == "user"), None)
                if first_user is None:
                    turns.insert(0, Turn("user", system))
                else:
                    turns[first_user] = Turn("user", f"{system}\n\n{turns[first_user].content}")
        if self.needs_user_first and turns and turns[0].role == "assistant":
            turns.insert(0, Turn("user", ""))
        if self.merges_turns:
            # Joined once per run of same-role turns: concatenating one by one would copy
            # the growing text again for every message (quadratic in a run's length).
            turns = [Turn(role, "\n\n".join(t.content for t in run)) for role, run in groupby(turns, key=lambda t: t.role)]
        return turns

    def text(self, messages: Sequence[Message]) -> str:
        """The rendered prompt, as the model sees it (for tests and debugging)."""
        return self._render(self.normalize(messages))

    def tokens(self, messages: Sequence[Message]) -> list[int]:
        """Prompt tokens: template text with special tokens parsed, contents as plain text."""
        return self.counted(messages, self._tokenize)[0]

    def counted(self, messages: Sequence[Message], tokenize: Tokenize) -> tuple[list[int], list[int]]:
        """The prompt tokens (by `tokenize`: the model's tokenizer or a memo of it), and
        about how many of them each message adds: its text and the template text before it,
        exactly where the template keeps messages one to a turn, else an even split (shares
        only guide trimming, which then counts exactly)."""
        turns = self.normalize(messages)
        rendered = self._render([Turn(t.role, _SENTINEL.format(i)) for i, t in enumerate(turns)])
        tokens: list[int] = []
        shares = [0] * (len(turns) + 1)  # the last: the template after the last turn
        # The pieces alternate template, content, template...: piece i belongs to turn i // 2.
        for i, piece in enumerate(_SENTINEL_RE.split(rendered)):
            before = len(tokens)
            if i % 2:  # odd pieces are the captured sentinel indexes
                # "replace": a lone surrogate (refused by the api, but a job may come from
                # elsewhere) must not fail the job.
                tokens += tokenize(turns[int(piece)].content.encode(errors="replace"), False)
            elif piece:
                tokens += tokenize(piece.encode(errors="replace"), True)
            shares[i // 2] += len(tokens) - before
        if len(turns) != len(messages):
            return tokens, [len(tokens) // max(len(messages), 1)] * len(messages)
        return tokens, shares[: len(messages)]
