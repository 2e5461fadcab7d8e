"""Clip index for video training: runs of consecutive 12 Hz frame sets per scene (torch-free).

A *cycle* is one 12 Hz frame set: the sample_data of the six cameras taken together, anchored on
CAM_FRONT's sample_data chain (each other camera contributes its sample_data nearest in time; at a
keyframe, the sample's own sample_data). A *clip* is an increasing list of cycle indices of one
scene. With `drop_prob > 0` a clip skips cycles at random (seeded), so the video module sees
variable time steps (83 ms, 167 ms, ...) and does not overfit one interval, as a real bus drops frames.

The index reads only the devkit's tables, never an image, so it is cheap to build over many scenes.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from schema.messages import CAMERA_CHANNELS

if TYPE_CHECKING:
    from nuscenes.nuscenes import NuScenes

ANCHOR_CHANNEL = "CAM_FRONT"
MAX_CAMERA_OFFSET_US = 42_000  # half a 12 Hz period: further than this, a camera is missing from the cycle


@dataclass(frozen=True)
class Cycle:
    """One 12 Hz frame set of a scene, by sample_data token."""

    timestamp_us: int  # the keyframe's sample timestamp, else the earliest camera's
    sample_token: str | None  # the keyframe sample, where this cycle is one
    sample_data: tuple[str | None, ...]  # one token per CAMERA_CHANNELS entry (None: camera missing)

    @property
    def is_keyframe(self) -> bool:
        return self.sample_token is not None


@dataclass(frozen=True)
class SceneCycles:
    """The cycles of one scene of one dataroot, in time order."""

    dataroot: str
    version: str
    scene: str
    cycles: tuple[Cycle, ...]


@dataclass(frozen=True)
class Clip:
    """`len(cycles)` frame sets of one scene, in time order, possibly with gaps (dropped frames)."""

    scene_index: int  # into ClipIndex.scenes
    cycles: tuple[int, ...]  # increasing indices into that scene's cycles

    def __len__(self) -> int:
        return len(self.cycles)


def scene_cycles(nusc: "NuScenes", scene_name: str, keyframes_only: bool = False, require_files: bool = True) -> list[Cycle]:
    """The 12 Hz cycles of a scene. `require_files` skips cycles whose image files are absent
    (e.g. the real scene-0523 ships the keyframe images only)."""
    scene = next((s for s in nusc.scene if s["name"] == scene_name), None)
    if scene is None:
        raise KeyError(f"scene {scene_name!r} is not in {nusc.dataroot} ({nusc.version})")
    first = nusc.get("sample", scene["first_sample_token"])
    # every camera's sample_data chain of the scene, in time order
    chains: dict[str, list[dict]] = {}
    for ch in CAMERA_CHANNELS:
        if ch not in first["data"]:
            chains[ch] = []
            continue
        rec = nusc.get("sample_data", first["data"][ch])
        while rec["prev"]:  # sweeps before the first keyframe belong to the scene too
            prev = nusc.get("sample_data", rec["prev"])
            if nusc.get("sample", prev["sample_token"])["scene_token"] != scene["token"]:
                break
            rec = prev
        chain = []
        while rec is not None:
            if nusc.get("sample", rec["sample_token"])["scene_token"] != scene["token"]:
                break
            chain.append(rec)
            rec = nusc.get("sample_data", rec["next"]) if rec["next"] else None
        chains[ch] = chain
    stamps = {ch: [r["timestamp"] for r in chain] for ch, chain in chains.items()}

    def exists(rec: dict) -> bool:
        return not require_files or os.path.isfile(os.path.join(nusc.dataroot, rec["filename"]))

    cycles = []
    for anchor in chains[ANCHOR_CHANNEL]:
        if keyframes_only and not anchor["is_key_frame"]:
            continue
        sample_token = anchor["sample_token"] if anchor["is_key_frame"] else None
        tokens: list[str | None] = []
        for ch in CAMERA_CHANNELS:
            if sample_token is not None:
                sample = nusc.get("sample", sample_token)
                rec = nusc.get("sample_data", sample["data"][ch]) if ch in sample["data"] else None
            else:
                rec = _nearest(chains[ch], stamps[ch], anchor["timestamp"])
                if rec is not None and rec["is_key_frame"]:
                    rec = None  # a keyframe image belongs to its keyframe cycle, not to a sweep cycle
            tokens.append(rec["token"] if rec is not None and exists(rec) else None)
        if all(t is None for t in tokens) or (require_files and tokens[0] is None):
            continue
        if sample_token is not None:
            ts = int(nusc.get("sample", sample_token)["timestamp"])
        else:
            ts = min(int(nusc.get("sample_data", t)["timestamp"]) for t in tokens if t is not None)
        cycles.append(Cycle(ts, sample_token, tuple(tokens)))
    return cycles


def _nearest(chain: list[dict], stamps: list[int], t: int) -> dict | None:
    if not chain:
        return None
    k = bisect.bisect_left(stamps, t)
    best = min((i for i in (k - 1, k) if 0 <= i < len(chain)), key=lambda i: abs(stamps[i] - t))
    return chain[best] if abs(stamps[best] - t) <= MAX_CAMERA_OFFSET_US else None


class ClipIndex:
    """All clips of length `length` over the given scenes, one starting every `stride` cycles.

    `clip(i, epoch)` returns clip i; with `drop_prob > 0` each step skips each further cycle with
    probability drop_prob (at most `max_skip` in a row), drawn from a generator seeded by
    (seed, epoch, i): the same arguments always give the same clip. `walk_clips` instead cuts one
    whole drive through a scene into consecutive clips, for streaming training.
    """

    def __init__(
        self,
        scenes: Sequence[SceneCycles],
        length: int,
        stride: int | None = None,
        drop_prob: float = 0.0,
        max_skip: int = 2,
        seed: int = 0,
    ) -> None:
        if length < 1:
            raise ValueError(f"clip length must be >= 1, got {length}")
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        if max_skip < 0:
            raise ValueError(f"max_skip must be >= 0, got {max_skip}")
        self.scenes = list(scenes)
        self.length = int(length)
        self.stride = int(stride or length)
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.drop_prob = float(drop_prob)
        self.max_skip = int(max_skip)
        self.seed = int(seed)
        self._starts: list[tuple[int, int]] = []  # (scene index, first cycle)
        for si, sc in enumerate(self.scenes):
            n = len(sc.cycles)
            self._starts.extend((si, s) for s in range(0, n - self.length + 1, self.stride))
        if not self._starts:
            raise ValueError(
                f"no clip of length {self.length} fits in {len(self.scenes)} scene(s) "
                f"(longest has {max((len(s.cycles) for s in self.scenes), default=0)} cycles)"
            )

    def __len__(self) -> int:
        return len(self._starts)

    def clip(self, i: int, epoch: int = 0) -> Clip:
        if not 0 <= i < len(self._starts):
            raise IndexError(f"clip {i} out of range 0..{len(self._starts) - 1}")
        si, start = self._starts[i]
        n = len(self.scenes[si].cycles)
        steps = np.ones(self.length - 1, dtype=np.int64)
        if self.drop_prob > 0 and self.length > 1:
            rng = np.random.default_rng((self.seed, epoch, i))
            steps += np.array([self._skips(rng) for _ in range(self.length - 1)], dtype=np.int64)
            # shrink the largest gaps until the clip fits in the scene
            while start + int(steps.sum()) >= n and steps.max() > 1:
                steps[int(np.argmax(steps))] -= 1
            start = min(start, n - 1 - int(steps.sum()))
        cycles = start + np.concatenate([[0], np.cumsum(steps)])
        return Clip(si, tuple(int(c) for c in cycles))

    def __getitem__(self, i: int) -> Clip:
        return self.clip(i)

    def _skips(self, rng: np.random.Generator) -> int:
        """Cycles skipped before the next frame: each further one with probability drop_prob, at most max_skip."""
        skips = 0
        while skips < self.max_skip and rng.random() < self.drop_prob:
            skips += 1
        return skips

    def walk_clips(self, scene_index: int, key: Sequence[int]) -> list[Clip]:
        """One drive through a whole scene for streaming training: from a random first cycle among the
        first `length`, frames with seeded drops (as in `clip`) to the scene's end, cut into consecutive
        clips of `length` (a shorter tail is left out). Consecutive clips continue each other, so a
        temporal state carried from one into the next sees the drive as the runtime would.
        Seeded by (*key, scene_index): the same key always gives the same walk."""
        n = len(self.scenes[scene_index].cycles)
        rng = np.random.default_rng((*(int(k) for k in key), scene_index))
        cycle = int(rng.integers(0, min(self.length, n)))
        cycles = [cycle]
        while True:
            cycle += 1 + (self._skips(rng) if self.drop_prob > 0 else 0)
            if cycle >= n:
                break
            cycles.append(cycle)
        return [Clip(scene_index, tuple(cycles[k:k + self.length])) for k in range(0, len(cycles) - self.length + 1, self.length)]

    def cycles_of(self, clip: Clip) -> tuple[SceneCycles, list[Cycle]]:
        sc = self.scenes[clip.scene_index]
        return sc, [sc.cycles[c] for c in clip.cycles]

    @classmethod
    def from_dataroots(
        cls,
        dataroots: Iterable[tuple[str, str]],
        length: int,
        scenes: Sequence[str] | None = None,
        keyframes_only: bool = False,
        nusc_cache: dict | None = None,
        **kwargs,
    ) -> "ClipIndex":
        """Index every scene (or the named ones) of each (dataroot, version)."""
        return cls(scenes_of_dataroots(dataroots, scenes, keyframes_only, nusc_cache), length, **kwargs)


def scenes_of_dataroots(
    dataroots: Iterable[tuple[str, str]],
    scenes: Sequence[str] | None = None,
    keyframes_only: bool = False,
    nusc_cache: dict | None = None,
) -> list[SceneCycles]:
    """SceneCycles of every scene (or the named ones) of each (dataroot, version), in table order."""
    out = []
    for dataroot, version in dataroots:
        nusc = load_nusc(dataroot, version, nusc_cache)
        for s in nusc.scene:
            if scenes is not None and s["name"] not in scenes:
                continue
            cyc = scene_cycles(nusc, s["name"], keyframes_only=keyframes_only)
            if cyc:
                out.append(SceneCycles(str(dataroot), version, s["name"], tuple(cyc)))
    return out


def load_nusc(dataroot: str, version: str, cache: dict | None = None) -> "NuScenes":
    """NuScenes(version, dataroot), memoised in `cache` (keyed by both)."""
    from nuscenes.nuscenes import NuScenes  # lazy: the devkit takes ~3 s to import

    key = (str(dataroot), version)
    if cache is not None and key in cache:
        return cache[key]
    if not os.path.isfile(os.path.join(dataroot, version, "scene.json")):
        raise FileNotFoundError(f"{dataroot} has no {version}/scene.json: not a nuScenes dataroot of that version")
    nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    if cache is not None:
        cache[key] = nusc
    return nusc
