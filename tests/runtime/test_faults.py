"""The fault matrix: every class of --faults, alone and a few together, on short replay-like and live
streams through the real runtime (fake model, the session's Ray). For each: the run goes on to the end;
frame sets in = ticks + drop records, each drop with a reason from the closed list; no NaN in any output;
a corrupt or truncated image never reaches the model as if it were fine (its camera is missing from the
tick, or the set is dropped); after an actor kill the temporal state continues from the checkpoint; under
overload the ticks in flight stay capped and a live stream drops the excess ('overload') instead of
queueing it."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from replay.fault_source import with_faults
from replay.faults import KillSchedule, parse_faults
from runtime.api import Runtime
from schema.results import DROP_REASONS, DropRecord, TickResult
from tests.runtime.conftest import small_config
from tests.runtime.fakes import CountingModel, LiveCameraSource, ListSource, make_frame_set

N_SETS = 24  # 2 s of stream at 12 Hz
DAMAGE = ("corrupt", "truncated")


def _finite(r: TickResult) -> bool:
    arrays = [r.detections_ego.boxes, r.detections_ego.scores, r.detections_global.boxes, r.ego_to_global.translation,
              r.ego_to_global.rotation.elements] + [p.points for p in r.polylines_ego + r.polylines_global]
    return all(np.all(np.isfinite(a)) for a in arrays)


def check_accounting(records: list, n_in: int) -> dict:
    """Every frame set ends as exactly one record; drops carry a known reason and a detail; no NaN. -> row."""
    assert sorted(r.frame_id for r in records) == list(range(n_in)), "frame sets unaccounted or doubled"
    drops = [r for r in records if isinstance(r, DropRecord)]
    assert all(d.reason in DROP_REASONS and d.detail for d in drops), [(d.reason, d.detail) for d in drops]
    ticks = [r for r in records if isinstance(r, TickResult)]
    assert all(_finite(t) for t in ticks)
    by_reason: dict[str, int] = {}
    for d in drops:
        by_reason[d.reason] = by_reason.get(d.reason, 0) + 1
    return {"ticks": len(ticks), "drops": by_reason, "unaccounted": n_in - len(records),
            "nan": sum(not _finite(t) for t in ticks)}


def damaged_never_fed(records: list, log: list, by_time: bool = False) -> int:
    """Each corrupt/truncated camera is missing from its tick (or its set was dropped). -> how many checked.
    Replay: matched by frame id; live (ids come from the synchroniser): by sensor time."""
    checked = 0
    for e in (e for e in log if e["fault"].split(":")[0] in DAMAGE):
        assert e["outcome"] == "rejected by the strict decoder"
        if by_time:
            near = [r for r in records if abs(r.timestamp_us - e["timestamp_us"]) < 40_000]
        else:
            near = [r for r in records if r.frame_id == e["frame_id"]]
        for r in near:
            assert isinstance(r, DropRecord) or e["channel"] in r.missing and e["channel"] not in r.seg_channels
            checked += 1
    return checked


@pytest.fixture(scope="module")
def runtime(ray_session):
    with Runtime(small_config(max_in_flight=2, live_queue=1), model_factory=CountingModel) as rt:
        yield rt


EVERY = {  # each class alone (kill and overload have tests of their own below)
    "dead": "dead:CAM_BACK@0.5",
    "missing": "missing:CAM_FRONT@0.3-1.0",
    "late": "late:0.1",
    "duplicate": "duplicate:0.05",
    "reorder": "reorder:0.2",
    "jump forward": "jump:5@1",
    "jump backward": "jump:-5@1",
    "corrupt": "corrupt:0.1",
    "truncated": "truncated:0.1",
    "wrong_size": "wrong_size:0.03",
    "nan_pose": "nan_pose:0.05",
}
REPLAY = {**EVERY, "overload": "overload:3@0.5-1.5",
          "together": "corrupt:0.1,nan_pose:0.02,missing:CAM_BACK@0.5-1,jump:-3@1.2,reorder:0.1,overload:2@0.2-0.6,late:0.05"}
ROWS: dict[str, dict] = {}


@pytest.mark.parametrize("name", list(REPLAY))
def test_replay_fault(runtime, name):
    source = with_faults(ListSource([make_frame_set(i, new_scene=(i == 0)) for i in range(N_SETS)]), REPLAY[name], seed=1)
    records = list(runtime.iterate(source))
    inj = source.injector
    assert inj.counts, "nothing was injected"
    row = check_accounting(records, inj.next_frame_id)
    damaged_never_fed(records, inj.log)
    refused = {e["frame_id"] for e in inj.log if e["fault"].split(":")[0] in ("nan_pose", "wrong_size", "duplicate")}
    for r in records:
        if r.frame_id in refused:  # a NaN pose, a mis-sized image, a camera twice: never run
            assert isinstance(r, DropRecord) and r.reason == "bad_input", r
    assert runtime.report.extra["max_in_flight_seen"] <= 2
    if name == "overload":  # a replay blocks: more sets, nothing dropped
        assert row["drops"] == {} and inj.next_frame_id > N_SETS
    assert runtime.report.extra["faults"]["counts"] == inj.counts
    ROWS[f"replay {name}"] = row


LIVE = {**EVERY, "together": "corrupt:0.05,nan_pose:0.03,dead:CAM_BACK@1,late:0.05,duplicate:0.05,reorder:0.1"}


@pytest.mark.parametrize("name", list(LIVE))
def test_live_fault(runtime, name):
    source = with_faults(LiveCameraSource(N_SETS), LIVE[name], seed=1)
    records = list(runtime.iterate(source))
    faults = runtime.report.extra["faults"]  # the injector ran in the ingest actor: its log came back
    assert faults["counts"], "nothing was injected"
    row = check_accounting(records, len(records))
    damaged_never_fed(records, faults["injected"], by_time=True)
    ticks = [r for r in records if isinstance(r, TickResult)]
    assert ticks and max(t.frame_id for t in ticks) >= len(records) - 3, "the stream did not run to its end"
    if name.startswith("jump"):  # the synchroniser starts afresh at the jump; most sets after it still tick
        after = [r for r in records if r.frame_id > len(records) // 2]
        assert sum(isinstance(r, TickResult) and not r.missing for r in after) >= len(after) // 2, \
            [(r.frame_id, getattr(r, "missing", r.kind)) for r in after]
    ROWS[f"live {name}"] = row


def test_live_overload_drops_the_excess_and_keeps_the_queue_bounded(ray_session):
    """3x the camera cycles for a second, on a model that keeps up with 1x only: the ticks in flight stay at
    the cap, the excess is dropped as 'overload' (not queued), and the stream runs on after the window."""
    factory = functools.partial(CountingModel, step_sleep_s=0.04)
    with Runtime(small_config(max_in_flight=2, live_queue=1), model_factory=factory) as rt:
        source = with_faults(LiveCameraSource(N_SETS + 12), "overload:3@0.5-1.5", seed=1)
        records = list(rt.iterate(source))
        row = check_accounting(records, len(records))
        assert rt.report.extra["max_in_flight_seen"] <= 2
    assert len(records) > N_SETS + 12 + 12  # the window's copies became frame sets too
    assert row["drops"].get("overload", 0) >= 3, row
    ticks = [r for r in records if isinstance(r, TickResult)]
    assert max(t.frame_id for t in ticks) >= len(records) - 3
    ROWS["live overload"] = row


@pytest.mark.parametrize("spec", ["kill:bev@0.7", "kill:backbone@0.7,corrupt:0.1,missing:CAM_BACK@0.2-0.5"])
def test_replay_kill_continues_from_the_checkpoint(ray_session, tmp_path, spec):
    """kill:STAGE@T through the CLI's loop (KillSchedule + Runtime.kill_stage): the ticks in flight become
    'actor_restart' drops, and the restarted actor's temporal state continues from its last checkpoint."""
    factory = functools.partial(CountingModel, step_sleep_s=0.1)
    faults = parse_faults(spec)
    source = with_faults(ListSource([make_frame_set(i, new_scene=(i == 0)) for i in range(N_SETS)]), faults, seed=1)
    kills, records = KillSchedule(faults), []
    with Runtime(small_config(max_in_flight=2, checkpoint_every=3), model_factory=factory) as rt:
        for r in rt.iterate(source, out_dir=tmp_path):
            records.append(r)
            for f in kills.due(r.timestamp_us):
                rt.kill_stage(f.arg, fault=f.describe(), after_frame_id=r.frame_id)
        assert rt.supervisor.restarts().get(faults[0].arg) == 1
    row = check_accounting(records, N_SETS)
    assert set(row["drops"]) <= {"actor_restart"} and row["drops"]
    killed_after = json.loads((tmp_path / "summary.json").read_text())["faults"]["killed"][0]["after_frame_id"]
    ticks = sorted((r for r in records if isinstance(r, TickResult)), key=lambda t: t.frame_id)
    counts = [(t.frame_id, int(t.detections_ego.boxes[0, 0])) for t in ticks]
    before = [c for f, c in counts if f <= killed_after]
    after = [c for f, c in counts if f > killed_after]
    assert before == list(range(1, len(before) + 1))
    assert after and (after[0] - 1) % 3 == 0 and after[0] - 1 <= len(before)  # resumed at a checkpoint
    assert after == list(range(after[0], after[0] + len(after)))  # and kept counting from there
    ROWS[f"replay {spec.split(',')[0]}" + (" + others" if "," in spec else "")] = row


def test_zz_print_matrix():
    """(Prints the matrix for the README; `pytest -s` shows it.)"""
    print("\n| fault | ticks | drops by reason | unaccounted | NaN |\n|---|---|---|---|---|")
    for name, row in ROWS.items():
        drops = ", ".join(f"{k} {v}" for k, v in sorted(row["drops"].items())) or "-"
        print(f"| {name} | {row['ticks']} | {drops} | {row['unaccounted']} | {row['nan']} |")
