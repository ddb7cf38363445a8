"""The loaded model: prompt tokens in, streamed text out, one generation at a time."""

import codecs
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp import Llama, LogitsProcessorList
from llama_cpp._internals import LlamaSampler

from hearth.contract import SamplingParams, ToolUse
from worker.document_index import DocumentIndex
from worker.embedder import Embedder, EmbeddingSpec
from worker.grammars import Grammars
from worker.models import ModelFile
from worker.prompter import Prompter
from worker.route_keys import RouteKeys
from worker.sampling import GrammarChecked, grammar_checked_llama
from worker.settings import WorkerSettings
from worker.state_cache import Source, StateCache
from worker.state_disk import StateDisk, common_prefix
from worker.stops import StopMatcher

log = logging.getLogger(__name__)


FORCED_RUN = 256  # characters of forced text evaluated with one step's token, at most


class Cancelled(Exception):
    """The generation was asked to stop (cancel flag seen between two tokens)."""


class TimedOut(Exception):
    """The generation ran past its wall-clock limit (checked between two tokens)."""


class Paused(Exception):
    """A chat is waiting and this (batch) generation gave way, between two tokens, at a point
    where all its text was sent: the model state holds the prompt and `tokens`, and a
    generation of prompt + `tokens` later continues exactly where this one stopped."""

    def __init__(self, tokens: list[int]):
        super().__init__(f"paused after {len(tokens)} tokens")
        self.tokens = tokens


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    tokens: list[int]  # the answer's tokens
    reuse: Source  # where the prompt's prefix came from


def _logit_bias(bias: dict[int, float], n_vocab: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    # The api refuses ids outside the vocabulary when it knows the worker; one queued while
    # no worker was up to ask is ignored here rather than failing the job.
    inside = {token: value for token, value in bias.items() if 0 <= token < n_vocab}
    ids = np.fromiter(inside.keys(), dtype=np.int64)
    values = np.fromiter(inside.values(), dtype=np.float32)

    def apply(_input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores[ids] += values
        return scores

    return apply


def _primer(llama: Llama, history: list[int]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Feeds `history` to the new sampler chain before its first token, as if it had sampled
    them itself: a resumed generation then continues exactly as the paused one would have.
    llama.cpp's penalty samplers remember only tokens accepted by their chain, and a grammar
    sampler's place in its grammar moves only with them (without this, a resumed JSON answer
    would start its JSON again). A logits processor is the one hook that runs inside the
    chain, ahead of the penalties and the grammar."""
    pending = list(history)

    def prime(_input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if pending and llama._sampler is not None:
            for token in pending:
                llama._sampler.accept(token)
            pending.clear()
        return scores

    return prime


class Engine:
    """One loaded model, with its own state cache: a saved state is only ever restored into
    the model that made it."""

    def __init__(self, settings: WorkerSettings, model: ModelFile, disk: StateDisk | None, routes: RouteKeys | None = None,
                 index: DocumentIndex | None = None):
        self.llama = grammar_checked_llama(
            model_path=str(model.path),
            n_ctx=model.n_ctx,
            n_threads=settings.n_threads,
            n_threads_batch=settings.n_threads,
            n_batch=settings.n_batch,
            n_gpu_layers=settings.n_gpu_layers,
            verbose=False,
        )
        self.settings = settings
        self.model_id = model.id
        self.n_ctx = self.llama.n_ctx()
        self.n_vocab = self.llama.n_vocab()
        vocab = self.llama._model.vocab
        self._is_eog: Callable[[int], bool] = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        self.prompter = Prompter(self.llama, self.n_ctx, settings.default_max_tokens, index or settings.document_index(),
                                 settings.tool_max_parallel_calls)
        self.overheads = self.prompter.overheads()
        self.cache = StateCache(self.llama, settings.state_cache_mb * 2**20, model.identity, disk, routes)
        self.grammars = Grammars(vocab, settings.tool_max_parallel_calls, self.prompter.template.dialect)
        # llama.cpp maps the file and reads each page on first use: one token evaluated now
        # touches every layer's weights, so reading them (from disk, at its speed, when the page
        # cache does not hold them) counts in the load (the `loading` event's wait, the load
        # metric, the wait estimates), not in the first answer's silence.
        self.llama.eval([max(self.llama.token_bos(), 0)])
        self.llama.reset()
        self._embedder: Embedder | None = None

    def embedder(self, spec: EmbeddingSpec) -> Embedder:
        """This model's embedding context (worker.embedder), made at its first embedding job."""
        if self._embedder is None:
            self._embedder = Embedder(self.llama._model, spec, self.settings.n_threads, owns_model=False)
        return self._embedder

    def close(self) -> None:
        """Free the weights, the contexts and the states saved in memory now, not when the GC
        gets to it: the next model is loaded into the memory this one frees (the states on disk
        stay, for when it is loaded again)."""
        self.cache.clear()
        if self._embedder is not None:
            self._embedder.close()
        self.llama.close()

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many leading `tokens` the current model state already holds."""
        held = self.llama.input_ids[: self.llama.n_tokens]
        return min(common_prefix(held, np.array(tokens, dtype=held.dtype)), len(tokens) - 1)  # the last one is re-evaluated for logits

    def generate(
        self,
        tokens: list[int],
        max_tokens: int,
        params: SamplingParams,
        on_text: Callable[[str, int], None],
        cancelled: threading.Event,
        deadline: float,
        preempt: threading.Event | None = None,
        answered: list[int] | None = None,
        tools: ToolUse | None = None,
    ) -> Generation:
        """Run one completion of `tokens`, calling `on_text(text, n_tokens)` as text is ready.
        The caller has checked that `max_tokens` fits in the window; `deadline` is a
        `time.monotonic()` value. When `preempt` is set, raise Paused at the next clean point.
        `answered`: the answer tokens that end `tokens`, when resuming a paused generation.
        `tools`: the answer is text or calls as worker.tool_calls spells them (its grammar)."""
        s = self.settings
        reuse = self.cache.prepare(tokens)
        cached = self.cached_prefix(tokens)
        if cached and not self.llama._ctx.kv_cache_seq_rm(-1, cached, -1):
            cached = 0  # a model whose memory cannot be cut there (recurrent): the prompt afresh
        # llama.cpp's sampler takes a 32-bit seed; OpenAI's is any int64.
        self.llama.set_seed(params.seed % 2**32 if params.seed is not None else random.getrandbits(32))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        grammar = self.grammars.for_tools(tools) if tools else None if params.json_schema is None else self.grammars.get(params.json_schema)
        # A JSON answer (or a call) ends where its grammar lets it end, when the JSON is
        # complete: a turn marker spelled inside one of its strings is text, not an end (and the
        # api refuses `stop` strings with a schema or tools), so nothing cuts the JSON short but
        # `max_tokens`.
        stops = StopMatcher(params.stop + (self.prompter.template.turn_markers if grammar is None else []))
        parts: list[str] = []
        finish, unsent, hit_stop = "length", 0, False
        produced: list[int] = []
        processors = [_primer(self.llama, answered)] if answered else []
        if params.logit_bias:
            processors.append(_logit_bias(params.logit_bias, self.n_vocab))

        def send(text: str) -> None:
            nonlocal unsent
            if text:
                parts.append(text)
                on_text(text, unsent)
                unsent = 0

        chain = self.llama._init_sampler(
            temp=s.temperature if params.temperature is None else params.temperature,
            top_p=s.top_p if params.top_p is None else params.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logits_processor=LogitsProcessorList(processors) if processors else None,
            grammar=grammar,
        )
        self.llama._sampler = chain  # where the primer finds it
        # A logit bias may ban a token a forced text would be written with: none is forced then.
        forcer = chain if isinstance(chain, GrammarChecked) and not params.logit_bias else None
        for token, step in self._decode(tokens, cached, chain, forcer):
            if cancelled.is_set():
                raise Cancelled()
            if time.monotonic() > deadline:
                raise TimedOut()
            if step and preempt is not None and preempt.is_set() and not unsent and not stops.holding:
                raise Paused(produced)  # `token` is dropped: sampled again on resume
            if self._is_eog(token):
                finish = "stop"
                break
            produced.append(token)
            unsent += 1
            text, hit_stop = stops.feed(decoder.decode(self.answer_text([token], tools)))
            send(text)
            if hit_stop:
                finish = "stop"
                break
            if len(produced) >= max_tokens:
                break
        if not hit_stop:  # no stop string completed: what was held back is answer text
            send(stops.flush() + decoder.decode(b"", final=True))
        return Generation("".join(parts), finish, len(tokens), cached, len(produced), produced, reuse)

    def _decode(self, tokens: list[int], cached: int, chain: LlamaSampler | GrammarChecked,
                forcer: GrammarChecked | None) -> Iterator[tuple[int, bool]]:
        """The answer's tokens after `tokens` (of which the model state holds `cached`), each
        with whether the model chose it: the text `forcer`'s grammar allows alone after a
        chosen token is evaluated with it in one batch, and a generation pauses only before a
        chosen token (a resumed one chooses again there)."""
        llama = self.llama
        llama.n_tokens = cached  # `eval` drops what the memory holds after it
        llama.eval(tokens[cached:])
        while True:
            token = chain.sample(llama._ctx, -1)
            forced, end = forcer.forced(FORCED_RUN) if forcer is not None and not self._is_eog(token) else ([], None)
            yield token, True
            for piece in forced:
                yield piece, False
            if end is not None:
                yield end, False  # the grammar allows nothing but the end: no step to ask for it
            llama.eval([token, *forced])

    def answer_text(self, tokens: list[int], tools: ToolUse | None) -> bytes:
        """An answer's tokens as text. With tools in the template's own dialect, control tokens
        are text too: its calls may open with one (Mistral v0.3's `[TOOL_CALLS]`, Llama 3.1's
        `<|python_tag|>`), which the call parser reads."""
        return self.llama.detokenize(tokens, special=tools is not None and self.prompter.template.native_tools)

    def keep_state(self, route: str | None = None) -> None:
        """After a job: its state is saved (to disk, in the background) for the conversation's
        next turn, here or after a restart; `route` is the key naming this worker its holder."""
        self.cache.keep(route)
