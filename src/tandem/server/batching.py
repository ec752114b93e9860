"""Dynamic batching: concurrent requests for one model run as one ONNX Runtime call.

Up to ``in_flight`` model calls run per model at a time, each in its own thread (so the event loop
keeps parsing); requests that arrive meanwhile queue up and form the next batch. On a small CPU,
two single-threaded calls in flight beat one call on two ONNX Runtime threads under HTTP load:
ONNX Runtime's worker threads spin-wait between calls and take the core the event loop needs. The batcher waits up to
``max_delay_s`` for more only while requests for this model are known to be on their way (their
bodies still being read or decoded, see :meth:`Batcher.slot`): a lone request never waits, so
batching costs nothing at concurrency 1, and a busy model fills its batches without waiting at all.

A lone request (nothing else queued, on its way or in a model call) may take another path,
``run_lone``: a session with every core's threads (models.py), since then no other call and hardly
any HTTP work wants the cores. It answers a request at concurrency 1 sooner; under load the
single-threaded calls above keep serving, and a request that meets others never takes it.

Queue-delay admission (``max_queue_s``, TANDEM_MAX_QUEUE_MS; CoDel's idea, Triton's queue policy with
a timeout and REJECT): a server that falls behind must not answer every request late. Once the
queue has stayed late for a whole budget (every request taken off it in that time had waited longer
than the budget: CoDel's interval, so a momentary stall such as a model loading next door sheds
nothing), a request that has waited longer than the budget when its turn comes is answered
``Unavailable`` (503 with Retry-After) instead of being run, oldest first, so the requests behind it
run in time, until one comes off within the budget again. A request therefore waits about two
budgets at most, and under a lasting overload about one. And a new
request is refused at once (before its body is read, and again when it joins the queue) while the
rows already queued would take longer than the budget to drain at the model's measured speed (an
EWMA of recent calls' rows per second, times the calls in flight) — never while they fit in the next
round of calls: a few requests queued behind a call that ran small batches slowly (a replica just
started, a busy machine) are one batch, not a backlog. The budget is never less than two
of the model's own call times: at full concurrency a request may always wait for the call in
progress and the one it joins, so a model slower than the budget is not refused for being busy. A
request that finds its model idle never waits and is never refused; until a call has been measured
nothing is shed.

Batch size under load: the batcher takes every queued request that fits when a model call is free,
so a queue holding a full batch runs it at once and a deep queue runs ``max_batch_size`` batches;
``max_delay_s`` is only spent when the queue is empty and more requests are known to be on their way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import thread_time  # not time.thread_time: tests stand a clock in for this module's time
from typing import Protocol

import numpy as np

from tandem.errors import TandemError, Unavailable

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]


class BatchObserver(Protocol):
    def batch(self, rows: int, requests: int, seconds: float, cpu_seconds: float) -> None:
        """A model call ran ``rows`` rows of ``requests`` requests in ``seconds`` (wall), taking ``cpu_seconds``
        of the CPU of the thread that made it (ModelThreads)."""
    def queue(self, depth: int) -> None: ...
    def shed(self, reason: str) -> None: ...


# Why a request was turned away by the queue budget (the ``reason`` of tandem_shed_requests_total).
QUEUE_TIMEOUT = "queue_timeout"  # it waited in the queue longer than the budget
EXPECTED_WAIT = "expected_wait"  # refused on arrival: the queue ahead would take longer than the budget
SHED_RETRY_AFTER_S = 1.0
EWMA_ALPHA = 0.2  # weight of the latest model call in the measured speed


@dataclass
class _Item:
    inputs: Tensors
    rows: int
    future: asyncio.Future[Tensors]
    enqueued: float = 0.0  # perf_counter() when queued
    started: float | None = None  # ... when its model call began
    compute_s: float = 0.0  # how long the model call that answered it took


@dataclass(frozen=True)
class Timing:
    """Where a request's time went in the batcher (Triton's statistics: queue and compute_infer)."""

    queue_s: float  # waiting for a batch and a free model call
    compute_s: float  # the model call its rows ran in (shared with the batch's other requests)


class Slot:
    """A request for this model that is on its way (body being read or decoded)."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self.submitted = False
        self.timing: Timing | None = None  # once answered

    async def submit(self, inputs: Tensors) -> Tensors:
        self.submitted = True
        self._batcher._arriving -= 1
        item = self._batcher._item(inputs)
        outputs = await self._batcher._wait(item)
        started = item.started if item.started is not None else item.enqueued
        self.timing = Timing(started - item.enqueued, item.compute_s)
        return outputs


class Batcher:
    def __init__(
        self,
        run: Callable[[Tensors], Tensors],
        max_batch_size: int,
        max_delay_s: float,
        name: str = "model",
        observer: BatchObserver | None = None,
        in_flight: int = 1,
        run_lone: Callable[[Tensors], Tensors] | None = None,
        max_queue_s: float = 0.0,
    ) -> None:
        """``max_queue_s``: the queue-delay budget (see the module's doc); 0: none."""
        self._run = run
        self._run_lone = run_lone
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.name = name
        self._observer = observer
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0  # rows of the requests in _queue
        self.max_queue_s = max_queue_s
        self._call_s = 0.0  # EWMA of a model call's seconds (0: none measured yet)
        self._rows_per_s = 0.0  # EWMA of a model call's rows per second
        self._late_since: float | None = None  # when the queue's head first came off late, in this episode
        self._arriving = 0
        self._running = 0  # requests in model calls now
        self.in_flight = max(1, in_flight)
        self._calls: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Threads of this model alone: its calls never wait behind image decoding or another model.
        self._threads = ModelThreads(self.in_flight, f"ort-{name}")

    @property
    def busy(self) -> bool:
        """Whether any request is on its way, queued or in the model call (not safe to unload)."""
        return bool(self._queue) or self._arriving > 0 or self._running > 0

    @property
    def queue_budget_s(self) -> float:
        """The queue-delay budget now: ``max_queue_s``, at least two of the model's measured call times; 0: none
        (also until a call has been measured: a budget below the model's speed would shed every request)."""
        return max(self.max_queue_s, 2 * self._call_s) if self.max_queue_s > 0 and self._call_s > 0 else 0.0

    def expected_wait_s(self, rows: int = 0) -> float:
        """How long the queued rows (and ``rows`` more) would take to drain at the measured speed; 0 before
        any call was measured, and 0 while they fit in the next round of calls (``max_batch_size`` rows
        each, ``in_flight`` of them): those start once the calls in progress end, which the budget (at least
        two call times) always allows. The measured rows per second come from the batches seen so far,
        usually smaller than full ones, so beyond one round the estimate errs towards waiting longer."""
        queued = self._queued_rows + rows
        if self._rows_per_s <= 0 or queued <= self.max_batch_size * self.in_flight:
            return 0.0
        return queued / (self._rows_per_s * self.in_flight)

    def _admit(self, rows: int) -> None:
        """Unavailable when requests are queued and the queue ahead (with ``rows`` more) would take longer
        than the budget to drain."""
        budget = self.queue_budget_s
        if budget <= 0 or not self._queue:
            return
        wait = self.expected_wait_s(rows)
        if wait > budget:
            if self._observer is not None:
                self._observer.shed(EXPECTED_WAIT)
            raise Unavailable(f"model {self.name} is behind: the {self._queued_rows} rows queued would take "
                              f"{wait * 1e3:.0f} ms, over its queue budget of {budget * 1e3:.0f} ms "
                              f"(TANDEM_MAX_QUEUE_MS); retry", retry_after=SHED_RETRY_AFTER_S)

    @contextlib.contextmanager
    def slot(self) -> Iterator[Slot]:
        """Announce a request before reading its body; submit through the slot when decoded. Unavailable
        at once (nothing read) when the model's queue is over its budget (see ``_admit``), judged for one row."""
        self._admit(1)
        self._arriving += 1
        s = Slot(self)
        try:
            yield s
        finally:
            if not s.submitted:
                self._arriving -= 1
                self._changed.set()

    async def submit(self, inputs: Tensors) -> Tensors:
        """Run ``inputs`` (every array with the same first dimension) in some batch; give its rows back."""
        with self.slot() as s:
            return await s.submit(inputs)

    def _item(self, inputs: Tensors) -> _Item:
        rows = next(iter(inputs.values())).shape[0]
        return _Item(inputs, rows, asyncio.get_running_loop().create_future(), time.perf_counter())

    async def _wait(self, item: _Item) -> Tensors:
        if self._closed:
            raise Unavailable(f"model {self.name} is being unloaded; retry", retry_after=1)
        try:
            self._admit(item.rows)
        except Unavailable:
            self._changed.set()  # one fewer on its way: a batch gathering for it need not wait
            raise
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")
        self._queue.append(item)
        self._queued_rows += item.rows
        self._changed.set()
        self._report_depth()
        return await item.future

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue(len(self._queue))

    def _pop(self) -> _Item:
        item = self._queue.popleft()
        self._queued_rows -= item.rows
        return item

    def _take(self, batch: list[_Item], rows: int) -> int:
        """Move queued requests into ``batch`` while they fit; skip those whose caller gave up, and answer
        those that waited past the queue budget Unavailable (the oldest are at the head)."""
        budget = self.queue_budget_s
        now = time.perf_counter()
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # cancelled by a timeout or a closed connection
                self._pop()
                continue
            waited = now - item.enqueued
            if budget > 0 and waited > budget:
                if self._late_since is None:
                    self._late_since = now
            else:
                self._late_since = None
            if self._late_since is not None and now - self._late_since >= budget:  # late for a whole budget
                self._pop()
                if self._observer is not None:
                    self._observer.shed(QUEUE_TIMEOUT)
                _fail(item, Unavailable(f"model {self.name} is behind: this request waited {waited * 1e3:.0f} ms "
                                        f"in its queue, over the budget of {budget * 1e3:.0f} ms "
                                        f"(TANDEM_MAX_QUEUE_MS); retry", retry_after=SHED_RETRY_AFTER_S))
                continue
            if batch and rows + item.rows > self.max_batch_size:
                break
            self._pop()
            batch.append(item)
            rows += item.rows
        return rows

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Item] = []
        try:
            await self._serve(loop, batch)
        finally:
            # close() cancels this task: the requests already taken off the queue (being gathered or
            # in a model call) must still get an answer, or their callers wait until their timeout.
            for item in batch:
                _fail(item, self._unloaded())
            for call in list(self._calls):
                call.cancel()
            if self._calls:
                await asyncio.gather(*self._calls, return_exceptions=True)

    async def _serve(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        while True:
            while len(self._calls) >= self.in_flight:
                await asyncio.wait(self._calls, return_when=asyncio.FIRST_COMPLETED)
            while not self._queue:
                self._changed.clear()
                await self._changed.wait()
            batch.clear()
            rows = self._take(batch, 0)
            if batch and rows < self.max_batch_size and self.max_delay_s > 0 and self._arriving > 0:
                deadline = loop.time() + self.max_delay_s
                while rows < self.max_batch_size and self._arriving > 0:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._changed.clear()
                    # asyncio.timeout, not wait_for: no task per wake-up (~7 us less each, about one a request at c16)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await self._changed.wait()
                    rows = self._take(batch, rows)
            self._report_depth()
            if not batch:
                continue
            lone = len(batch) == 1 and not self._calls and not self._queue and self._arriving == 0
            run = self._run_lone if lone and self._run_lone is not None else self._run
            call = loop.create_task(self._call(loop, list(batch), rows, run))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)
            batch.clear()

    async def _call(self, loop: asyncio.AbstractEventLoop, batch: list[_Item], rows: int,
                    run: Callable[[Tensors], Tensors]) -> None:
        self._running += len(batch)
        try:
            await self._run_batch(loop, batch, rows, run)
        except asyncio.CancelledError:
            for item in batch:
                _fail(item, self._unloaded())
            raise
        finally:
            self._running -= len(batch)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Item], rows: int,
                         run: Callable[[Tensors], Tensors]) -> None:
        t0 = time.perf_counter()
        for item in batch:
            if item.started is None:
                item.started = t0
        try:
            outputs, cpu = await self._threads.run(loop, run, _merge(batch))
        except Exception as e:
            if len(batch) > 1:
                # Run them one by one so that only the request that breaks the model fails.
                for item in batch:
                    await self._run_batch(loop, [item], item.rows, self._run)
                return
            _fail(batch[0], e)
            return
        took = time.perf_counter() - t0
        self._measured(rows, took)
        if self._observer is not None:
            self._observer.batch(rows, len(batch), took, cpu)
        start = 0
        for item in batch:
            item.compute_s = took
            end = start + item.rows
            if not item.future.done():
                item.future.set_result({k: v[start:end] for k, v in outputs.items()})
            start = end

    def _measured(self, rows: int, took: float) -> None:
        """Fold a model call's time into the speed the queue budget judges by."""
        took = max(took, 1e-6)
        if self._call_s == 0.0:
            self._call_s, self._rows_per_s = took, rows / took
        else:
            self._call_s += EWMA_ALPHA * (took - self._call_s)
            self._rows_per_s += EWMA_ALPHA * (rows / took - self._rows_per_s)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue:
            _fail(self._pop(), self._unloaded())
        self._threads.close()

    def _unloaded(self) -> Unavailable:
        return Unavailable(f"model {self.name} was unloaded; retry", retry_after=1)


class ModelThreads:
    """``count`` threads that run a model's calls, each answer handed back to the event loop in one call.

    What run_in_executor does, without a ThreadPoolExecutor's concurrent Future, its locks and callbacks and the
    chaining of that Future to an asyncio one: 20-55 us less CPU per model call on this machine (measured
    around a 0.5 ms stand-in call), a call per request at concurrency 1 and one per batch under load.

    Each answer comes with the CPU time the call took on its thread (``time.thread_time``: two clock reads, under
    a microsecond, per call): the model's own CPU, which tandem_inference_cpu_seconds reports and bench/
    serving_profile.py subtracts from the server's to find the stack's. Not the wall time: with calls in flight
    on every core, that includes each moment a call waited for a core. ONNX Runtime's own pool threads (a
    session with more than one intra-op thread) are not the calling thread and are not counted."""

    def __init__(self, count: int, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[tuple[Tensors, float]],
                                            Callable[[Tensors], Tensors], Tensors] | None] = queue.SimpleQueue()
        self._count = count
        self._name = name
        self._started: list[threading.Thread] = []
        self._closed = False

    def run(self, loop: asyncio.AbstractEventLoop, fn: Callable[[Tensors], Tensors],
            feeds: Tensors) -> asyncio.Future[tuple[Tensors, float]]:
        """``fn(feeds)`` on one of the threads; its result and the CPU seconds it took, or its exception, in the
        future."""
        if self._closed:
            raise RuntimeError(f"{self._name}: the model's threads were closed")
        if len(self._started) < self._count:
            t = threading.Thread(target=self._serve, name=f"{self._name}_{len(self._started)}", daemon=True)
            t.start()
            self._started.append(t)
        future: asyncio.Future[tuple[Tensors, float]] = loop.create_future()
        self._work.put((loop, future, fn, feeds))
        return future

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            loop, future, fn, feeds = item
            try:
                cpu = thread_time()
                outputs = fn(feeds)
                outcome: tuple[Callable[..., object], object] = (_settle, (outputs, thread_time() - cpu))
                del outputs
            except BaseException as e:  # handed to the awaiting request, which raises it
                outcome = (_fail_future, e)
            del item, feeds
            with contextlib.suppress(RuntimeError):  # the loop closed while the call ran: nobody waits for it
                loop.call_soon_threadsafe(outcome[0], future, outcome[1])

    def close(self) -> None:
        """Let every thread end after the calls already queued (whose requests close() answered already: their
        results are dropped); no call is taken after this."""
        self._closed = True
        for _ in self._started:
            self._work.put(None)


def _settle(future: asyncio.Future[tuple[Tensors, float]], result: tuple[Tensors, float]) -> None:
    if not future.done():  # a request cancelled meanwhile (its time limit, a closed connection)
        future.set_result(result)


def _fail_future(future: asyncio.Future[tuple[Tensors, float]], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _merge(batch: list[_Item]) -> Tensors:
    if len(batch) == 1:
        return batch[0].inputs
    return {k: np.concatenate([it.inputs[k] for it in batch]) for k in batch[0].inputs}


def _fail(item: _Item, e: Exception) -> None:
    if item.future.done():
        return
    if not isinstance(e, TandemError):
        log.exception("model call failed", exc_info=e)
    item.future.set_exception(e)
