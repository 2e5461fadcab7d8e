"""PerceptionActor queues its ticks in the driver's order, even where Ray starts the async calls out of order."""
from __future__ import annotations

import asyncio

import runtime.actors as actors
from runtime.actors import PerceptionActor


def _bare_actor() -> PerceptionActor:
    actor = object.__new__(PerceptionActor)  # the ordering state only: no model, no Ray
    actor.queued = set()
    return actor


def test_a_tick_waits_until_its_predecessor_is_queued():
    async def scenario():
        actor, order = _bare_actor(), []

        async def tick(seq, after):
            await actor._turn(after)
            order.append(seq)
            actor._mark_queued(seq)

        second = asyncio.ensure_future(tick(1, after=0))  # Ray started the later call first
        await asyncio.sleep(0.02)
        assert order == []  # it waits for tick 0
        await tick(0, after=None)
        await second
        return order

    assert asyncio.run(scenario()) == [0, 1]


def test_a_predecessor_that_never_comes_is_waited_for_a_bounded_time(monkeypatch):
    monkeypatch.setattr(actors, "ORDER_WAIT_S", 0.05)  # e.g. it went to an actor that died

    async def scenario():
        actor = _bare_actor()
        await asyncio.wait_for(actor._turn(after=41), timeout=1.0)
        actor._mark_queued(42)
        return actor.queued

    assert asyncio.run(scenario()) == {42}


def test_the_record_of_queued_ticks_stays_small():
    actor = _bare_actor()
    for seq in range(1000):
        actor._mark_queued(seq)
    assert len(actor.queued) <= 65 and 999 in actor.queued
