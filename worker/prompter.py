"""A model's own view of a conversation: its chat template, its tokens, and what fits.

Built from any `Llama` of the model, including a vocab-only one: the generation loop and
the pre-queue size check use the same code, so they agree on every count.
"""

from collections.abc import Sequence

from llama_cpp import Llama

from hearth.contract import Message
from worker.context import Plan, plan
from worker.prompt import ChatTemplate


SEPARATOR_TOKENS = 4  # margin per message: folded or merged messages are joined with "\n\n"


class Prompter:
    def __init__(self, llama: Llama, n_ctx: int, default_max_tokens: int):
        self._llama, self.n_ctx, self._default_max_tokens = llama, n_ctx, default_max_tokens
        meta = llama.metadata
        bos, eos = llama.token_bos(), llama.token_eos()
        self.template = ChatTemplate(
            meta.get("tokenizer.chat_template"),
            bos_token=self._piece(bos),
            eos_token=self._piece(eos),
            tokenize=lambda text, special: llama.tokenize(text, add_bos=False, special=special),
        )
        self._bos = bos if meta.get("tokenizer.ggml.add_bos_token") == "true" else None

    def _piece(self, token: int) -> str:
        return self._llama.detokenize([token], special=True).decode(errors="replace") if token >= 0 else ""

    def tokens(self, messages: Sequence[Message]) -> list[int]:
        tokens = self.template.tokens(messages)
        if self._bos is not None and tokens[:1] != [self._bos]:
            tokens.insert(0, self._bos)
        return tokens

    def overheads(self) -> tuple[int, int]:
        """Template tokens of a one-message chat, and per further message: with each message's
        UTF-8 length (a token is at least one byte), an upper bound on any chat's prompt."""
        empty = [Message(role="user", content="")]
        base = len(self.tokens(empty))
        more = len(self.tokens(empty + [Message(role="assistant", content=""), Message(role="user", content="")]))
        return base, max(0, more - base) // 2 + SEPARATOR_TOKENS

    def plan(self, messages: Sequence[Message], max_tokens: int | None) -> Plan:
        return plan(messages, max_tokens, self._default_max_tokens, self.n_ctx, self.tokens)
