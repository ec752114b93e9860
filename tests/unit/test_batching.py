"""The dynamic batcher with a readable fake model: the batch doubles its input and records calls."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from tandem.errors import ModelError, Unavailable
from tandem.server import batching
from tandem.server.batching import Batcher

HANG_GUARD_S = 30  # only stops a broken batcher from hanging the suite; never reached when it works


class Doubler:
    """Answers ``x * 2``; a row holding 255 breaks it (as a model can break on one bad input)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate

    def __call__(self, feeds):
        if self.gate is not None:
            self.gate.wait(HANG_GUARD_S)
        x = feeds["x"]
        self.calls.append(len(x))
        if (x == 255).any():
            raise ModelError("the model broke on 255")
        return {"y": x.astype(np.int64) * 2}


def rows(*values: int) -> dict[str, np.ndarray]:
    return {"x": np.array(values, np.uint8).reshape(-1, 1)}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, HANG_GUARD_S))


def test_a_lone_request_runs_at_once_even_with_a_long_delay():
    async def main():
        model = Doubler()
        b = Batcher(model, max_batch_size=8, max_delay_s=3600)
        out = await b.submit(rows(1, 2))
        await b.close()
        return model.calls, out

    calls, out = run(main())
    assert calls == [2] and out["y"].ravel().tolist() == [2, 4]


def test_requests_that_queue_while_the_model_runs_share_the_next_call_and_get_their_own_rows():
    async def main():
        gate = threading.Event()
        model = Doubler(gate)
        b = Batcher(model, max_batch_size=4, max_delay_s=0)
        first = asyncio.create_task(b.submit(rows(0)))
        await asyncio.sleep(0)  # the first request is now in the model, blocked on the gate
        rest = [asyncio.create_task(b.submit(rows(i, 100 + i))) for i in range(1, 4)]
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        outs = await asyncio.gather(first, *rest)
        await b.close()
        return model.calls, outs

    calls, outs = run(main())
    # 1 row alone, then 2 + 2 rows (the third 2-row request would overflow 4), then the last 2.
    assert calls == [1, 4, 2]
    assert outs[0]["y"].ravel().tolist() == [0]
    for i, out in enumerate(outs[1:], 1):
        assert out["y"].ravel().tolist() == [2 * i, 2 * (100 + i)]


def test_the_batcher_waits_for_a_request_that_is_on_its_way():
    async def main():
        model = Doubler()
        b = Batcher(model, max_batch_size=8, max_delay_s=3600)
        with b.slot() as coming:  # a request whose body is still being read
            early = asyncio.create_task(b.submit(rows(1)))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not early.done()  # held back: another one was announced
            late = await coming.submit(rows(2))
        out = await early
        await b.close()
        return model.calls, out, late

    calls, early, late = run(main())
    assert calls == [2] and early["y"].ravel().tolist() == [2] and late["y"].ravel().tolist() == [4]


def test_a_batch_that_fills_while_more_are_on_their_way_runs_at_once():
    async def main():
        model = Doubler()
        b = Batcher(model, max_batch_size=3, max_delay_s=3600)
        with b.slot() as late:  # on its way all along
            first = asyncio.create_task(b.submit(rows(1)))
            for _ in range(5):
                await asyncio.sleep(0)  # the batcher has taken it and waits for more
            assert not first.done()
            rest = [asyncio.create_task(b.submit(rows(i))) for i in (2, 3)]
            outs = await asyncio.wait_for(asyncio.gather(first, *rest), 5)  # full: it runs without the late one
            last = await late.submit(rows(4))
        await b.close()
        return model.calls, outs, last

    calls, outs, last = run(main())
    assert calls == [3, 1] and [o["y"].item() for o in outs] == [2, 4, 6] and last["y"].item() == 8


def test_an_announced_request_that_fails_to_arrive_releases_the_batch():
    async def main():
        model = Doubler()
        b = Batcher(model, max_batch_size=8, max_delay_s=3600)
        with pytest.raises(ValueError), b.slot():
            task = asyncio.create_task(b.submit(rows(3)))
            await asyncio.sleep(0)
            raise ValueError("the body was malformed")
        out = await task
        await b.close()
        return out

    assert run(main())["y"].ravel().tolist() == [6]


def test_one_bad_request_fails_alone_and_the_rest_of_its_batch_succeeds():
    async def main():
        gate = threading.Event()
        model = Doubler(gate)
        b = Batcher(model, max_batch_size=8, max_delay_s=0)
        blocker = asyncio.create_task(b.submit(rows(0)))
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(b.submit(rows(v))) for v in (1, 255, 3)]
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(blocker, *tasks, return_exceptions=True)
        await b.close()
        return model.calls, results

    calls, results = run(main())
    assert calls == [1, 3, 1, 1, 1]  # the batch of three failed, then each ran alone
    assert results[1]["y"].item() == 2 and results[3]["y"].item() == 6
    assert isinstance(results[2], ModelError)


def test_a_cancelled_request_is_skipped():
    async def main():
        gate = threading.Event()
        model = Doubler(gate)
        b = Batcher(model, max_batch_size=8, max_delay_s=0)
        blocker = asyncio.create_task(b.submit(rows(0)))
        await asyncio.sleep(0)
        gone = asyncio.create_task(b.submit(rows(1)))
        kept = asyncio.create_task(b.submit(rows(2)))
        await asyncio.sleep(0)
        gone.cancel()
        gate.set()
        out = await kept
        await blocker
        await b.close()
        return model.calls, out

    calls, out = run(main())
    assert calls == [1, 1] and out["y"].item() == 4


def test_observer_sees_batch_sizes_and_queue_depth():
    class Seen:
        def __init__(self):
            self.batches, self.depths = [], []

        def batch(self, rows, requests, seconds, cpu_seconds):
            self.batches.append((rows, requests))

        def queue(self, depth):
            self.depths.append(depth)

    async def main():
        seen = Seen()
        b = Batcher(Doubler(), max_batch_size=8, max_delay_s=0, observer=seen)
        await asyncio.gather(*(b.submit(rows(i)) for i in range(3)))
        await b.close()
        return seen

    seen = run(main())
    assert sum(r for r, _ in seen.batches) == 3 and max(seen.depths) >= 1 and seen.depths[-1] == 0


def test_observer_is_told_the_cpu_a_call_took_not_its_wall_time():
    """A call that sleeps takes wall time but hardly any CPU; one that computes takes both."""
    def sleeps(feeds):
        time.sleep(0.05)
        return {"y": feeds["x"]}

    def computes(feeds):
        end = time.thread_time() + 0.03
        while time.thread_time() < end:
            pass
        return {"y": feeds["x"]}

    class Seen:
        def __init__(self):
            self.calls = []

        def batch(self, rows, requests, seconds, cpu_seconds):
            self.calls.append((seconds, cpu_seconds))

        def queue(self, depth):
            pass

    async def main(fn):
        seen = Seen()
        b = Batcher(fn, max_batch_size=8, max_delay_s=0, observer=seen)
        await b.submit(rows(1))
        await b.close()
        return seen.calls

    [(wall, cpu)] = run(main(sleeps))
    assert wall >= 0.05 and cpu < 0.01
    [(wall, cpu)] = run(main(computes))
    assert 0.03 <= cpu <= wall


def test_closing_answers_the_requests_of_the_batch_in_flight():
    async def main():
        gate = threading.Event()
        b = Batcher(Doubler(gate), max_batch_size=8, max_delay_s=0)
        running = asyncio.create_task(b.submit(rows(1)))
        for _ in range(5):
            await asyncio.sleep(0)
        assert b.busy  # in the model call
        await b.close()  # as when the pool unloads the version
        gate.set()
        return await asyncio.gather(running, return_exceptions=True)

    [result] = run(main())
    assert isinstance(result, Unavailable) and "was unloaded; retry" in str(result)


def test_busy_counts_requests_on_their_way_queued_and_in_the_model():
    async def main():
        b = Batcher(Doubler(), max_batch_size=8, max_delay_s=0)
        seen = [b.busy]
        with b.slot() as s:
            seen.append(b.busy)
            await s.submit(rows(1))
        seen.append(b.busy)
        await b.close()
        return seen

    assert run(main()) == [False, True, False]


@pytest.mark.parametrize("in_flight", [1, 2])
def test_model_calls_in_flight_are_bounded_by_in_flight(in_flight):
    """With in_flight=2, a second batch starts while the first is still in the model; with 1 it waits."""
    active, most = 0, 0
    lock = threading.Lock()
    both_in = threading.Barrier(2)

    def model(feeds):
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        if in_flight == 2:
            both_in.wait(HANG_GUARD_S)  # only passes once two calls are in the model together
        with lock:
            active -= 1
        return {"y": feeds["x"].astype(np.int64) * 2}

    async def main():
        b = Batcher(model, max_batch_size=1, max_delay_s=0, in_flight=in_flight)
        out = await asyncio.gather(*(b.submit(rows(v)) for v in (1, 2, 3, 4)))
        await b.close()
        return [int(o["y"][0, 0]) for o in out]

    assert run(main()) == [2, 4, 6, 8]
    assert most == in_flight


def test_a_lone_request_runs_on_the_lone_path_and_those_that_meet_others_on_the_batch_path():
    async def main():
        gate = threading.Event()
        batch, lone = Doubler(), Doubler(gate)
        b = Batcher(batch, max_batch_size=8, max_delay_s=0, in_flight=2, run_lone=lone)
        first = asyncio.create_task(b.submit(rows(1)))  # nothing else queued or running: lone
        for _ in range(5):
            await asyncio.sleep(0)
        # Two more arrive while it runs (held at the gate): they share a call on the batch path, on
        # the other slot, even though that call holds two requests' worth of rows alone.
        both = await asyncio.wait_for(asyncio.gather(b.submit(rows(2)), b.submit(rows(3))), HANG_GUARD_S)
        gate.set()
        await first
        last = await b.submit(rows(4))  # idle again: lone
        await b.close()
        return batch.calls, lone.calls, both, last

    batch_calls, lone_calls, both, last = run(main())
    assert lone_calls == [1, 1] and batch_calls == [2]
    assert [o["y"].item() for o in both] == [4, 6] and last["y"].item() == 8


def test_a_request_with_another_on_its_way_is_not_lone():
    async def main():
        batch, lone = Doubler(), Doubler()
        b = Batcher(batch, max_batch_size=8, max_delay_s=0, in_flight=2, run_lone=lone)
        with b.slot() as coming:  # its body is still being read
            early = await b.submit(rows(1))  # no delay allowed: runs at once, but not alone
            late = await coming.submit(rows(2))  # by now nothing else is about: lone
        await b.close()
        return batch.calls, lone.calls, early, late

    batch_calls, lone_calls, early, late = run(main())
    assert batch_calls == [1] and lone_calls == [1]
    assert early["y"].item() == 2 and late["y"].item() == 4


def test_a_failing_lone_call_fails_its_request_alone():
    async def main():
        batch, lone = Doubler(), Doubler()
        b = Batcher(batch, max_batch_size=8, max_delay_s=0, run_lone=lone)
        bad = await asyncio.gather(b.submit(rows(255)), return_exceptions=True)
        good = await b.submit(rows(5))
        await b.close()
        return batch.calls, lone.calls, bad, good

    batch_calls, lone_calls, [bad], good = run(main())
    assert isinstance(bad, ModelError) and good["y"].item() == 10
    assert lone_calls == [1, 1] and batch_calls == []  # not retried on the batch path


# --- the queue-delay budget (TANDEM_MAX_QUEUE_MS) ------------------------------------------------
# A fake clock the model calls advance by a fixed amount: a "slow" model without sleeping, so what is
# shed depends on nothing the machine's load can change. Powers of two keep the sums exact.

CALL_S = 1 / 64  # each model call "takes" this long
BUDGET_S = 8 / 64  # eight calls' worth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


class Timed:
    """A model whose every call advances ``clock`` by ``seconds``, optionally held at a gate first."""

    def __init__(self, clock: Clock, seconds: float = CALL_S, gate: threading.Event | None = None) -> None:
        self.clock, self.seconds, self.gate, self.calls = clock, seconds, gate, []

    def __call__(self, feeds):
        if self.gate is not None:
            self.gate.wait(HANG_GUARD_S)
        self.clock.now += self.seconds
        self.calls.append(len(feeds["x"]))
        return {"y": feeds["x"].astype(np.int64) * 2}


class Shed:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def batch(self, rows, requests, seconds, cpu_seconds):
        pass

    def queue(self, depth):
        pass

    def shed(self, reason):
        self.reasons.append(reason)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(batching, "time", c)
    return c


def test_once_the_queue_stays_late_for_a_budget_requests_past_it_are_answered_unavailable(clock):
    """Thirty requests at once, one row a call: the k-th comes off the queue after k calls. The ninth is
    the first over the budget (8 calls); the queue then stays late, and from the 17th on (late for a
    whole budget) the rest are answered 503 instead of run."""

    async def main():
        seen = Shed()
        b = Batcher(Timed(clock), max_batch_size=1, max_delay_s=0, observer=seen, max_queue_s=BUDGET_S)
        out = await asyncio.gather(*(b.submit(rows(i)) for i in range(30)), return_exceptions=True)
        after = await b.submit(rows(7))  # the queue is empty again: served
        await b.close()
        return out, after, seen.reasons

    out, after, reasons = run(main())
    assert [o["y"].item() for o in out[:17]] == [2 * i for i in range(17)]
    assert all(isinstance(o, Unavailable) for o in out[17:])
    assert out[17].retry_after >= 1 and "TANDEM_MAX_QUEUE_MS" in str(out[17]) and "waited 266 ms" in str(out[17])
    assert reasons == [batching.QUEUE_TIMEOUT] * 13 and after["y"].item() == 14


def test_a_late_spell_shorter_than_the_budget_sheds_nothing(clock):
    """A stall (one call that takes three budgets, as when a model loads next door): the requests that
    waited through it come off late, but the queue is on time again within a budget, so all run."""

    async def main():
        seen = Shed()
        model = Timed(clock)
        b = Batcher(model, max_batch_size=4, max_delay_s=0, observer=seen, max_queue_s=BUDGET_S)
        for _ in range(5):
            await b.submit(rows(1))  # measured: a call takes 1/64 s
        model.seconds = 3 * BUDGET_S  # the next call stalls
        first = asyncio.create_task(b.submit(rows(0)))
        for _ in range(5):
            await asyncio.sleep(0)
        model.seconds = CALL_S
        out = await asyncio.gather(first, *(b.submit(rows(i)) for i in range(1, 7)))
        await b.close()
        return out, seen.reasons

    out, reasons = run(main())
    assert [o["y"].item() for o in out] == [2 * i for i in range(7)] and reasons == []


def test_a_new_request_is_refused_when_the_queue_ahead_would_take_longer_than_the_budget(clock):
    async def main():
        gate = threading.Event()
        seen = Shed()
        b = Batcher(Timed(clock), max_batch_size=1, max_delay_s=0, observer=seen, max_queue_s=BUDGET_S)
        await b.submit(rows(1))  # measured: 64 rows/s, one call in flight
        b._run = Timed(clock, gate=gate)
        held = asyncio.create_task(b.submit(rows(2)))  # in the model, held at the gate
        for _ in range(5):
            await asyncio.sleep(0)
        queued = [asyncio.create_task(b.submit(rows(3))) for _ in range(12)]
        for _ in range(5):
            await asyncio.sleep(0)
        refused_early = [t.done() for t in queued]
        # announced (nothing read yet): refused at once
        with pytest.raises(Unavailable) as before_body, b.slot():
            pass
        gate.set()
        out = await asyncio.gather(held, *queued, return_exceptions=True)
        await b.close()
        return refused_early, before_body.value, out, seen.reasons, b.busy

    refused_early, before_body, out, reasons, busy = run(main())
    # 8 rows queued drain in 8/64 s = the budget: the ninth and later would wait longer.
    assert refused_early == [False] * 8 + [True] * 4
    assert all(o["y"].item() == 6 for o in out[1:9]) and all(isinstance(o, Unavailable) for o in out[9:])
    assert "the 8 rows queued would take 141 ms" in str(out[9]) and "TANDEM_MAX_QUEUE_MS" in str(before_body)
    assert reasons == [batching.EXPECTED_WAIT] * 5 and not busy


def test_requests_that_fit_in_the_next_batch_are_not_refused_however_slow_small_batches_were(clock):
    """Single-row calls measured at half a budget each (a replica just started on a busy machine): at
    that speed two queued rows already fill the budget, but eight make one batch that starts when the
    call in progress ends, so they are let in; the ninth and later would need a second round."""

    async def main():
        gate = threading.Event()
        seen = Shed()
        b = Batcher(Timed(clock, BUDGET_S / 2), max_batch_size=8, max_delay_s=0, observer=seen, max_queue_s=BUDGET_S)
        await b.submit(rows(1))  # measured: 16 rows/s, one call in flight
        b._run = Timed(clock, BUDGET_S / 2, gate=gate)
        held = asyncio.create_task(b.submit(rows(2)))
        for _ in range(5):
            await asyncio.sleep(0)
        queued = [asyncio.create_task(b.submit(rows(3))) for _ in range(12)]
        for _ in range(5):
            await asyncio.sleep(0)
        refused = [t.done() for t in queued]
        gate.set()
        out = await asyncio.gather(held, *queued, return_exceptions=True)
        await b.close()
        return refused, out, seen.reasons

    refused, out, reasons = run(main())
    assert refused == [False] * 8 + [True] * 4
    assert all(o["y"].item() == 6 for o in out[1:9]) and all(isinstance(o, Unavailable) for o in out[9:])
    assert reasons == [batching.EXPECTED_WAIT] * 4


def test_with_no_budget_nothing_is_shed(clock):
    async def main():
        seen = Shed()
        b = Batcher(Timed(clock), max_batch_size=1, max_delay_s=0, observer=seen, max_queue_s=0)
        await b.submit(rows(1))
        out = await asyncio.gather(*(b.submit(rows(i)) for i in range(40)))
        await b.close()
        return out, seen.reasons

    out, reasons = run(main())
    assert [o["y"].item() for o in out] == [2 * i for i in range(40)] and reasons == []


def test_a_lone_request_and_one_behind_a_slow_call_are_never_shed(clock):
    """A model whose calls take 100 times the budget: a request finding it idle runs, and one that
    waits for the call in progress runs too (the budget is at least two call times)."""

    async def main():
        seen = Shed()
        gate = threading.Event()
        slow = 100 * BUDGET_S
        b = Batcher(Timed(clock, slow), max_batch_size=1, max_delay_s=0, observer=seen, max_queue_s=BUDGET_S)
        lone = [await b.submit(rows(i)) for i in range(3)]  # each finds it idle
        b._run = Timed(clock, slow, gate)
        first = asyncio.create_task(b.submit(rows(4)))
        for _ in range(5):
            await asyncio.sleep(0)
        second = asyncio.create_task(b.submit(rows(5)))  # waits the whole slow call
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        out = await asyncio.gather(first, second)
        await b.close()
        return lone, out, seen.reasons, b.queue_budget_s

    lone, out, reasons, budget = run(main())
    assert [o["y"].item() for o in lone + out] == [0, 2, 4, 8, 10] and reasons == []
    assert budget == 2 * 100 * BUDGET_S
