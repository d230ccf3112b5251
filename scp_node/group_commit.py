"""Group commit: concurrent C-STOREs of one process share one round of durability work.

Without it every C-STORE pays for its own directory fsync and its own database
transaction. With it (``GROUP_COMMIT``, on by default) each handler still does its
own part in its own thread (parse, fsync of its received file, rename into the spool:
the file fsyncs of concurrent C-STOREs run at the same time, GIL released), then hands
the instance to this process's one committer thread and waits on its own event. The
committer gathers what has been handed in, for at most ``GROUP_COMMIT_WINDOW_MS``
and ``GROUP_COMMIT_MAX`` instances, and runs one *round* (``commit_round``, from
:class:`scp_node.ingest.Ingestor`): one fsync per directory the round's files were
renamed into, then one transaction with all the round's rows. Only then does it set
each instance's event, with that instance's own outcome.

The window never waits for C-STOREs that are not yet on their way: it ends as soon as
every handler that has announced itself (:meth:`GroupCommitter.arrival`) has handed
in its instance, so a single association pays only the hand-off to the thread.

Never an early acknowledgement: a handler returns success only when its event is set
with no error, and the event is set only after the round's fsyncs and commit returned.
Whatever fails (an exception in the round, a dead committer thread, a wait longer than
:data:`WAIT_SECONDS`) becomes an error for the instances concerned, never a success.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from spinenode.core.errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``commit_round(items) -> errors``: makes every item durable and indexed, returns one
#: entry per item (None: committed; an exception: that item failed, with this error).
CommitRound = Callable[[Sequence[T]], Sequence[BaseException | None]]

#: The longest a handler waits for its round (seconds); then its C-STORE is refused.
#: Above SQLite's busy timeout (30 s), below common SCU DIMSE timeouts (60 s and more).
WAIT_SECONDS = 50.0


@dataclass(eq=False)
class _Ticket(Generic[T]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class RoundStats:
    """What the committer has done so far (for tests and the benchmark)."""

    rounds: int
    items: int
    largest: int


class Arrival(Generic[T]):
    """One announced C-STORE: :meth:`commit` hands its item in and waits for the round."""

    def __init__(self, committer: GroupCommitter[T]) -> None:
        self._committer = committer
        self.handed_in = False

    def commit(self, item: T) -> None:
        """Hand ``item`` to the committer and wait until its round is over.

        Raises
        ------
        BaseException
            The item's own error from the round (StorageError, DatabaseError ...), or
            StorageError when the committer does not answer within :data:`WAIT_SECONDS`.
        """
        ticket: _Ticket[T] = _Ticket(item)
        self._committer._hand_in(ticket)
        self.handed_in = True
        if not ticket.done.wait(WAIT_SECONDS):
            raise StorageError(f"group commit did not answer within {WAIT_SECONDS:.0f} s")
        if ticket.error is not None:
            raise ticket.error


class GroupCommitter(Generic[T]):
    """One committer thread per process; rounds bounded by ``window`` seconds and ``max_items``."""

    def __init__(self, commit_round: CommitRound[T], window: float, max_items: int,
                 name: str = "group-commit") -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self._commit_round = commit_round
        self.window = max(0.0, window)
        self.max_items = max_items
        self._cond = threading.Condition()
        self._queue: collections.deque[_Ticket[T]] = collections.deque()
        self._expected = 0  # announced arrivals not yet handed in
        self._stopping = False
        self._rounds = self._items = self._largest = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- handler side -------------------------------------------------------------
    @contextlib.contextmanager
    def arrival(self) -> Iterator[Arrival[T]]:
        """Announce a C-STORE on its way to :meth:`Arrival.commit` (the window waits for it)."""
        with self._cond:
            self._expected += 1
        arrival: Arrival[T] = Arrival(self)
        try:
            yield arrival
        finally:
            if not arrival.handed_in:  # failed before its commit: stop waiting for it
                with self._cond:
                    self._expected -= 1
                    self._cond.notify()

    def _hand_in(self, ticket: _Ticket[T]) -> None:
        with self._cond:
            if self._stopping or not self._thread.is_alive():
                ticket.error = StorageError("group commit stopped")
                ticket.done.set()
            else:
                self._queue.append(ticket)
            self._expected -= 1
            self._cond.notify()

    # --- committer side ---------------------------------------------------------------
    def queued(self) -> int:
        """Instances handed in and not yet taken into a round."""
        with self._cond:
            return len(self._queue)

    def stats(self) -> RoundStats:
        with self._cond:
            return RoundStats(self._rounds, self._items, self._largest)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the rounds already handed in, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        stats = self.stats()
        log.info("group commit: %d instances in %d rounds (largest %d)", stats.items, stats.rounds, stats.largest)

    def _gather(self) -> list[_Ticket[T]] | None:
        """The next round's tickets (None: stop). Waits for the first, then for at most
        ``window`` while announced C-STOREs are still on their way."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.window
            while len(self._queue) < self.max_items and self._expected > 0 and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(len(self._queue), self.max_items)
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            tickets = self._gather()
            if tickets is None:
                return
            self._round(tickets)

    def _round(self, tickets: list[_Ticket[T]]) -> None:
        try:
            errors = list(self._commit_round([t.item for t in tickets]))
            if len(errors) != len(tickets):
                raise RuntimeError(f"commit round returned {len(errors)} outcomes for {len(tickets)} items")
        except Exception as exc:  # noqa: BLE001 - the round itself broke: no instance of it is acknowledged
            log.error("group commit round of %d instance(s) failed: %s", len(tickets), type(exc).__name__)
            failure = StorageError(f"group commit round failed ({type(exc).__name__})")
            errors = [failure] * len(tickets)
        with self._cond:
            self._rounds += 1
            self._items += len(tickets)
            self._largest = max(self._largest, len(tickets))
        for ticket, error in zip(tickets, errors, strict=True):
            ticket.error = error
            ticket.done.set()
