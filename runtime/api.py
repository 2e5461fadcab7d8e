"""The Python API: `Runtime`.

    with Runtime(load_config()) as rt:                 # starts Ray (or joins ray.address) and the actors
        async for record in rt.stream(source):         # TickResult or DropRecord, one per frame set
            ...
        for record in rt.iterate(source):              # the same as a plain iterator, for scripts
            ...

`source` is any schema.source.FrameSource (NuScenesSource, SimulatedVehicle, ...). With `out_dir`
the sink actor writes the run directory (see sink.py). `rt.report` holds the last run's RunReport.
The model is runtime.yaml's (model.factory, else the shipped network) unless `model_factory` is given:
any zero-arg callable that builds a runtime/model_protocol.py model (each actor calls it).
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import ray

from runtime.config import RuntimeConfig
from runtime.feeders import ActorFeeder, SourceFeeder, source_frame_sets
from runtime.pipeline import TickPipeline
from runtime.report import RunReport
from schema.results import DropRecord, TickResult
from runtime.supervisor import Supervisor


async def _cancel_pending() -> None:
    """Cancel and await every other task of the running loop (a stream stopped early leaves some)."""
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


class Runtime:
    """A running pipeline of actors; stream as many sources through it as you like, then close()."""

    def __init__(self, config: RuntimeConfig | None = None, *, model_factory: Callable[[], Any] | None = None):
        self.cfg = config or RuntimeConfig()
        if model_factory is None:  # runtime.yaml's `model:`: model.factory's model, else the shipped network
            from runtime.model_factory import model_factory as configured_factory

            model_factory = configured_factory(self.cfg)  # a bad model.factory: ConfigError, before any actor
        self.model_factory = model_factory
        self.supervisor = Supervisor(self.cfg, model_factory)
        self.report: RunReport | None = None
        self.started = False
        self.kills: list[dict] = []  # kill_stage calls of the current stream (summary.json's faults.killed)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Runtime":
        if not self.started:
            self.supervisor.start()
            self.started = True
        return self

    def close(self) -> None:
        if self.started:
            self.supervisor.stop()
            self.started = False

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "Runtime":
        return self.start()

    async def __aexit__(self, *exc) -> None:
        self.close()

    def placement(self) -> dict[str, str]:
        return self.supervisor.placement()

    def kill_stage(self, stage: str, **note: Any) -> str:
        """Fault injection (`--faults kill:STAGE@T`): `ray.kill` the actor running `stage` ('backbone', 'bev'
        or 'perception'; one PerceptionActor runs both when the stages are fused), letting Ray restart it as
        after a crash. -> the actor's role killed. Logged with `note` in summary.json's faults.killed."""
        sup = self.supervisor
        if stage not in ("backbone", "bev", "perception"):
            raise ValueError(f"unknown stage {stage!r}; expected backbone, bev or perception")
        actor = sup.bev if stage in ("bev", "perception") else sup.backbone
        role = "perception" if sup.fused else ("bev" if stage == "perception" else stage)
        ray.kill(actor, no_restart=False)
        self.kills.append({"stage": stage, "actor": role, "wall_ns": time.time_ns(), **note})
        return role

    # -- streaming --------------------------------------------------------------------------
    async def stream(self, source: Any, out_dir: str | Path | None = None,
                     expected_samples: list[str] | None = None) -> AsyncIterator[TickResult | DropRecord]:
        """Every frame set of `source` as one TickResult or one DropRecord, in order of completion."""
        self.start()
        live = bool(getattr(source, "is_live", False))
        report = RunReport(live, deadline_ms=self.cfg.profile.deadline_ms)
        self.report = report
        self.kills = []
        sink = self.supervisor.start_sink(str(out_dir), expected_samples) if out_dir is not None else None
        late = [0]
        report.extra["torch_threads"] = self.supervisor.threads_for(live)
        scaled_decode = (not live and self.cfg.pipeline.scaled_decode and self.supervisor.prescaler is not None
                         and hasattr(source, "decode_for"))
        if scaled_decode:  # JPEGs decode only as large as the rectifier uses them (undone in `finally`)
            defer = {"defer": True} if self.cfg.pipeline.replay_decode == "backbone" and _takes(source.decode_for, "defer") else {}
            source.decode_for(self.supervisor.prescaler.needed_size, workers=self.cfg.pipeline.ingest_threads, **defer)
        if live and self.cfg.pipeline.live_ingest == "actor":
            ingest = self.supervisor.start_ingest(source)
            feeder = ActorFeeder(ingest)
        else:
            ingest = None
            feeder = SourceFeeder(source_frame_sets(source, self.cfg.sync, late), live, asyncio.get_running_loop(),
                                  prescale=self.supervisor.prescaler, read_ahead=self.cfg.pipeline.read_ahead)
        pipeline = TickPipeline(self.supervisor.backbone, self.supervisor.bev, self.cfg.pipeline, live, sink)
        started = time.time()
        try:
            feeder.start()
            async for record in pipeline.run(feeder):
                report.add(record)
                yield record
        finally:
            feeder.stop()
            if scaled_decode:
                source.decode_for(None)
            if ingest is not None:
                try:
                    late[0] = await ingest.late_frames.remote()
                    report.extra["source_stats"] = await ingest.source_stats.remote()
                except Exception:  # noqa: BLE001 - the ingest actor died: its count is lost
                    pass
            report.extra.update(
                late_or_rejected_frames=late[0],
                actor_restarts=self.supervisor.restarts(),
                max_in_flight_seen=pipeline.max_seen_in_flight,
                actor_restart_wait_s=round(pipeline.restart_wait_s, 3),
                wall_s=round(time.time() - started, 3),
            )
            if ingest is None:
                stats = getattr(getattr(source, "stats", None), "summary", None)
                if callable(stats):
                    report.extra["source_stats"] = stats()
            self._faults_summary(report)
            if sink is not None:
                summary = self.summary(source)
                await sink.close.remote(summary)
                ray.kill(sink)
                self.supervisor.sink = None
            if ingest is not None:
                ray.kill(ingest)
                self.supervisor.ingest = None

    def _faults_summary(self, report: RunReport) -> None:
        """The injected faults (a FaultySource's log, in its statistics) and the stage kills, as summary.json's
        `faults`."""
        faults = (report.extra.get("source_stats") or {}).pop("faults", None)
        if faults is not None or self.kills:
            report.extra["faults"] = {**(faults or {}), "killed": list(self.kills)}

    def summary(self, source: Any = None) -> dict:
        """The last run's report plus where it ran and with what configuration (summary.json)."""
        out = self.report.summary() if self.report is not None else {}
        describe = getattr(source, "describe", None)
        out["source"] = describe() if callable(describe) else repr(source)
        out["placement"] = self.supervisor.placement() if self.started else {}
        out["config"] = self.cfg.model_dump(mode="json")
        return out

    def iterate(self, source: Any, **kwargs: Any) -> Iterator[TickResult | DropRecord]:
        """`stream` as a plain (synchronous) iterator."""
        loop = asyncio.new_event_loop()
        agen = self.stream(source, **kwargs)
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    break
        finally:  # a consumer that stops early: run the stream's cleanup, then settle what it cancelled
            loop.run_until_complete(agen.aclose())
            loop.run_until_complete(_cancel_pending())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _takes(fn: Any, name: str) -> bool:
    """Whether `fn` accepts the keyword `name` (a source's decode_for may predate `defer`: it then decodes itself)."""
    import inspect

    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
