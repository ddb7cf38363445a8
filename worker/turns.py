"""Which of its queues a worker of several models reads first, before each job.

Chats before embeddings before batch lines, whatever their model. Within each kind, the model that ran last
(loaded, so its jobs cost no load) keeps its turn while it has jobs waiting, but only for
`swap_after` jobs in a row while another model's jobs wait: then the model served least
recently goes first. Two models used in turn therefore swap at most once per `swap_after`
jobs instead of once per job, and no model waits behind another for ever.
"""

from collections.abc import Sequence

from hearth.contract import ANY_MODEL, QueueKind, queue_model, queue_name


class Turns:
    def __init__(self, models: list[str], swap_after: int, embedding_models: Sequence[str] = ()):
        self._models, self._swap_after = models, swap_after
        self._embedding = [*embedding_models, ANY_MODEL]
        self._batch_only = [m for m in embedding_models if m not in models]  # embedding models' batch lines
        self._holder: str | None = None  # the model whose job ran last
        self._streak = 0  # its jobs taken in a row while another model's jobs waited
        self._contested = False  # another model's jobs were waiting at the last `order`
        self._served: dict[str, int] = {}  # model -> when its last job was taken (a count)
        self._taken = 0

    def order(self, loaded: list[str], waiting: set[str]) -> list[str]:
        """The queues to read now, first first. `loaded`: models in memory, most recently
        used first; `waiting`: the queues that have jobs."""
        holder = self._holder or (loaded[0] if loaded else None)
        busy = {queue_model(q) for q in waiting} - {ANY_MODEL}
        self._contested = bool(busy - {holder})
        exhausted = self._contested and self._streak >= self._swap_after
        since = self._served.get
        if exhausted:  # fairness first: least recently served first, the holder last
            models = sorted(self._models, key=lambda m: since(m, -1))
        else:  # no load when it can be helped: the holder, the others in memory, then the rest
            first = [holder] if holder in self._models else []
            others = [m for m in loaded if m in self._models and m not in first]  # not embedding-only models
            rest = sorted((m for m in self._models if m not in first and m not in others), key=lambda m: since(m, -1))
            models = first + others + rest
        # Jobs for any model are answered by the one in memory: right after it. Embeddings
        # come between chats and batch lines, in the order the worker was given its models.
        chats = (*models[:1], ANY_MODEL, *models[1:])
        return [*(queue_name(QueueKind.INTERACTIVE, m) for m in chats), *(queue_name(QueueKind.EMBEDDING, m) for m in self._embedding),
                *(queue_name(QueueKind.BATCH, m) for m in (*chats, *self._batch_only))]

    def taken(self, model: str) -> None:
        """A job of `model` was taken from the queues `order` gave."""
        if model not in self._models:  # an embedding-only model's: chat models' turns are unchanged
            return
        if model != self._holder:
            self._holder, self._streak = model, 0
        self._streak = self._streak + 1 if self._contested else 0
        self._taken += 1
        self._served[model] = self._taken
