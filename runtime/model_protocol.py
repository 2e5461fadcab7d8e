"""The model protocol: what the runtime's stages call on a model, and what each call gets and gives back.

Any object with these methods runs through the runtime (docs/model-protocol.md has a minimal one);
runtime/model_adapter.py puts the shipped network behind it, runtime/oracle.py the log's own annotations.
Each actor builds its own model by calling a zero-arg factory (runtime/model_factory.py picks it).

    backbone stage, per tick:   preprocess(images, ...) -> x, K, cam_to_ego;   encode(x) -> feats, seg
    BEV stage, per tick:        step(feats, BevInputs, state) -> outputs, state;  decode(outputs) -> boxes, lines
    BEV stage, per stream:      new_state() at a scene change; state_to_bytes / state_from_bytes for checkpoints

N is the number of cameras present in the tick (CAMERA_CHANNELS order), NCAM = 6 their slots.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from schema.results import DetectionArrays, Polyline

REQUIRED_METHODS: tuple[str, ...] = ("preprocess", "encode", "step", "decode", "new_state", "state_to_bytes",
                                     "state_from_bytes")
OPTIONAL_METHODS: tuple[str, ...] = ("new_tracker", "warm_up")


@dataclass(frozen=True)
class BevInputs:
    """Everything but the features that the BEV step of one tick gets: the cameras' geometry, the ego's pose
    and motion, and the tick's identity in its log (a model may ignore any of it)."""

    intrinsics: np.ndarray  # (1, NCAM, 3, 3) float32, as preprocess returned them (identity for absent cameras)
    cam_to_ego: np.ndarray  # (1, NCAM, 4, 4) float32 (identity for absent cameras)
    camera_mask: np.ndarray  # (1, NCAM) bool: the cameras present
    ego_to_global: np.ndarray  # (1, 4, 4) float64: ego pose at the tick's reference time
    timestamp_s: np.ndarray  # (1,) float64: the tick's reference time
    kinematics: np.ndarray  # (1, 7) float32: ego velocity (3), acceleration (3), yaw rate
    reset: np.ndarray  # (1,) bool: first tick of a scene (the state given is fresh)
    scene: str = ""  # the scene's name in its log
    sample_token: str | None = None  # the nuScenes sample of a keyframe tick; None for sweeps and live streams
    timestamp_us: int = 0  # the tick's reference time in integer microseconds (the log's own clock)


class PerceptionModel(Protocol):
    """What the runtime calls on a model. Arrays are numpy; `Any` values are the model's own (torch tensors,
    dicts, ...) and only travel between its own calls, inside one actor.

    Optional methods (looked up with getattr; a model without them works):
      new_tracker() -> a tracker (perception.tracking.BoxTracker: reset(), track_filter(ego_to_global (4, 4),
          timestamp_s, new_scene), snapshot(), restore()) or None; the BEV stage then passes each tick's bound
          track filter to decode and checkpoints the tracks beside the state.
      warm_up() -> None: one-off work (kernel compilation) run once before the stream, after a synthetic tick.
    """

    def preprocess(self, images: list[np.ndarray], channels: tuple[str, ...], intrinsics: np.ndarray,
                   cam_to_ego: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """N (H_i, W_i, 3) uint8 RGB images of the present cameras (any size), their channel names, (N, 3, 3)
        float64 intrinsics and (N, 4, 4) float64 camera->ego of the images as delivered -> (x, K, cam_to_ego):
        x the model input, passed as it is to encode (the shipped network: (1, N, 3, H, W) float in [0, 1]);
        K (N, 3, 3) and cam_to_ego (N, 4, 4) of x's cameras (after any resize or rectification)."""

    def encode(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """x -> (feats, seg): per-camera features (1, N, C, h, w) float32 and segmentation labels (N, hs, ws) uint8
        (schema.classes.SEG_CLASSES; (N, 0, 0) for a model without segmentation). Called with any N from 1 to
        NCAM: live streams encode each camera as it arrives, so cameras must be independent batch items."""

    def step(self, feats: np.ndarray, inputs: BevInputs, state: Any) -> tuple[Any, Any]:
        """(1, NCAM, C, h, w) float32 features in the camera slots (zeros where inputs.camera_mask is False),
        the tick's BevInputs and the temporal state -> (outputs, new state). Return a new state object rather
        than mutating the one given: a checkpoint may still be serialising it."""

    def decode(self, outputs: Any, track_filter: Any = None) -> tuple[DetectionArrays, list[Polyline]]:
        """step's outputs -> ego-frame DetectionArrays (boxes (M, 9) x, y, z, w, l, h, yaw, vx, vy; scores; class
        labels and names; attributes; track ids or None) and road Polylines ((K, 2) ego-frame points). The
        stage converts both to the global frame. `track_filter` is passed only when new_tracker gave a tracker."""

    def new_state(self) -> Any:
        """A fresh temporal state: at start and at each scene change (any picklable value, or None)."""

    def state_to_bytes(self, state: Any) -> bytes:
        """The state as bytes for a checkpoint (every pipeline.checkpoint_every ticks) ..."""

    def state_from_bytes(self, data: bytes) -> Any:
        """... and back, in a restarted actor, which continues the stream from it: the round trip must be exact."""


def missing_methods(model: Any) -> list[str]:
    """The protocol's required methods that `model` lacks (or has as non-callables)."""
    return [name for name in REQUIRED_METHODS if not callable(getattr(model, name, None))]

