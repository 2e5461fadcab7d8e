"""TemporalState: everything the video module carries from one tick to the next, explicit and serialisable.

Two feature queues (time-based and space-based) and the spatial GRU's hidden state, a raster fixed to
the world. All fields are batched tensors (leading dim B, one stream per item) so a batch of streams
advances together; per-item pushes and resets are masks. Nothing here is an nn.Module: the state is
data, owned by whoever drives the stream (an actor can checkpoint it with `to_bytes`).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, fields

import torch


@dataclass
class FeatureQueue:
    """A fixed-capacity queue per stream; slot 0 is the newest entry."""

    feats: torch.Tensor  # (B, L, Cq, H, W) BEV features (compressed by the video module)
    ego_to_global: torch.Tensor  # (B, L, 4, 4) float64, ego pose at push
    timestamp_s: torch.Tensor  # (B, L) float64
    odometer_m: torch.Tensor  # (B, L) float64, distance travelled at push
    kinematics: torch.Tensor  # (B, L, 7)
    valid: torch.Tensor  # (B, L) bool
    last_push_s: torch.Tensor  # (B,) float64, timestamp of the newest push (-inf: never)
    last_push_odometer_m: torch.Tensor  # (B,) float64 (-inf: never)

    @classmethod
    def empty(cls, batch: int, length: int, channels: int, hw: tuple[int, int], device=None) -> "FeatureQueue":
        h, w = hw
        f64 = dict(dtype=torch.float64, device=device)
        return cls(
            feats=torch.zeros(batch, length, channels, h, w, device=device),
            ego_to_global=torch.eye(4, **f64).expand(batch, length, 4, 4).clone(),
            timestamp_s=torch.zeros(batch, length, **f64),
            odometer_m=torch.zeros(batch, length, **f64),
            kinematics=torch.zeros(batch, length, 7, device=device),
            valid=torch.zeros(batch, length, dtype=torch.bool, device=device),
            last_push_s=torch.full((batch,), float("-inf"), **f64),
            last_push_odometer_m=torch.full((batch,), float("-inf"), **f64),
        )

    @property
    def length(self) -> int:
        return self.valid.shape[1]

    def push(self, mask: torch.Tensor, feat: torch.Tensor, pose: torch.Tensor, t: torch.Tensor, odo: torch.Tensor, kin: torch.Tensor) -> "FeatureQueue":
        """New queue with (feat, pose, t, odo, kin) pushed at slot 0 for the items where mask (B,) is True."""

        every, none = bool(mask.all()), not bool(mask.any())

        def shift(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            if none:
                return old
            rolled = torch.cat([new[:, None].to(old.dtype), old[:, :-1]], dim=1)
            if every:
                return rolled
            return torch.where(mask.view(-1, *([1] * (old.ndim - 1))), rolled, old)

        return FeatureQueue(
            feats=shift(self.feats, feat),
            ego_to_global=shift(self.ego_to_global, pose),
            timestamp_s=shift(self.timestamp_s, t),
            odometer_m=shift(self.odometer_m, odo),
            kinematics=shift(self.kinematics, kin),
            valid=shift(self.valid, torch.ones_like(mask)),
            last_push_s=torch.where(mask, t, self.last_push_s),
            last_push_odometer_m=torch.where(mask, odo, self.last_push_odometer_m),
        )

    def reset(self, mask: torch.Tensor) -> "FeatureQueue":
        """Drop every entry of the items where mask (B,) is True."""
        if not bool(mask.any()):
            return self
        return FeatureQueue(
            feats=torch.where(mask.view(-1, 1, 1, 1, 1), torch.zeros_like(self.feats), self.feats),
            ego_to_global=self.ego_to_global,
            timestamp_s=self.timestamp_s,
            odometer_m=self.odometer_m,
            kinematics=self.kinematics,
            valid=self.valid & ~mask[:, None],
            last_push_s=torch.where(mask, torch.full_like(self.last_push_s, float("-inf")), self.last_push_s),
            last_push_odometer_m=torch.where(mask, torch.full_like(self.last_push_odometer_m, float("-inf")), self.last_push_odometer_m),
        )


@dataclass
class TemporalState:
    """Queues + spatial GRU hidden raster (world-aligned, rolling) + odometry, per stream."""

    time_queue: FeatureQueue
    space_queue: FeatureQueue
    hidden: torch.Tensor  # (B, Ch, Hw, Ww) GRU hidden raster; row i along global x, column j along global y
    anchor_xy: torch.Tensor  # (B, 2) float64 global (x, y) of the raster's corner (cell (0, 0) lower edges)
    odometer_m: torch.Tensor  # (B,) float64 distance travelled since the last reset
    last_ego_to_global: torch.Tensor  # (B, 4, 4) float64, pose of the previous tick
    started: torch.Tensor  # (B,) bool: False until the first tick after a reset

    @property
    def batch_size(self) -> int:
        return self.started.shape[0]

    def reset(self, mask: torch.Tensor | None = None) -> "TemporalState":
        """Forget everything for the items where mask (B,) is True (all items if None): a new scene."""
        if mask is None:
            mask = torch.ones_like(self.started)
        if not bool(mask.any()):
            return self
        return TemporalState(
            time_queue=self.time_queue.reset(mask),
            space_queue=self.space_queue.reset(mask),
            hidden=torch.where(mask.view(-1, 1, 1, 1), torch.zeros_like(self.hidden), self.hidden),
            anchor_xy=self.anchor_xy,
            odometer_m=torch.where(mask, torch.zeros_like(self.odometer_m), self.odometer_m),
            last_ego_to_global=self.last_ego_to_global,
            started=self.started & ~mask,
        )

    def detach(self) -> "TemporalState":
        """Cut the autograd graph (truncated back-propagation between training clips)."""
        return TemporalState(**{f.name: _map(getattr(self, f.name), lambda t: t.detach()) for f in fields(self)})

    def state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, FeatureQueue):
                for g in fields(v):
                    out[f"{f.name}.{g.name}"] = getattr(v, g.name)
            else:
                out[f.name] = v
        return {k: v.detach().cpu().clone() for k, v in out.items()}

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "TemporalState":
        kw = {}
        for f in fields(cls):
            if f.name in ("time_queue", "space_queue"):
                try:
                    kw[f.name] = FeatureQueue(**{g.name: sd[f"{f.name}.{g.name}"] for g in fields(FeatureQueue)})
                except KeyError as e:
                    raise ValueError(f"TemporalState.from_state_dict: missing key {e.args[0]!r}") from None
            elif f.name not in sd:
                raise ValueError(f"TemporalState.from_state_dict: missing key {f.name!r}")
            else:
                kw[f.name] = sd[f.name]
        return cls(**kw)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TemporalState":
        return cls.from_state_dict(torch.load(io.BytesIO(data), weights_only=True))


def _map(v, fn):
    if isinstance(v, FeatureQueue):
        return FeatureQueue(**{g.name: fn(getattr(v, g.name)) for g in fields(v)})
    return fn(v)
