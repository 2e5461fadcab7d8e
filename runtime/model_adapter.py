"""perception/'s BEVStreamModel behind the runtime's PerceptionModel interface, and its factory.

The factory is a small picklable object (options + checkpoint path): each actor builds its own
model from it, so weights are read where the actor runs and never pickled through Ray.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schema.attributes import AttributeConfig, attribute_names
from schema.results import DetectionArrays, Polyline

log = logging.getLogger(__name__)


def random_weights_warning() -> str:
    return ("WARNING: no model checkpoint configured and no shipped weights found: running with RANDOM weights "
            "(detections and road lines are meaningless); set model.checkpoint in runtime.yaml or pass --checkpoint")


@dataclass(frozen=True)
class ModelFactory:
    """Builds the model adapter inside an actor: ModelConfig from `options`, weights from `checkpoint`."""

    options: dict
    checkpoint: str | None

    @classmethod
    def from_config(cls, section) -> "ModelFactory":
        ckpt = section.resolved_checkpoint()
        return cls(dict(section.options), None if ckpt is None else str(ckpt))

    def model_config(self):
        try:
            from perception.config import model_config_from_dict
        except ImportError:
            if self.options:
                raise ValueError(f"model options {sorted(self.options)} given but perception/config.py is missing")
            from perception.model import ModelConfig

            return ModelConfig()
        return model_config_from_dict(self.options)

    def build_torch_model(self):
        """The plain torch model in eval mode with its weights: what research code would use directly.

        With a checkpoint, `options` are laid over the model config saved with the weights
        (perception.checkpoint.load_trained_model); without one they configure random weights."""
        if self.checkpoint is not None:
            from perception.checkpoint import load_trained_model

            return load_trained_model(Path(self.checkpoint), self.options)
        from perception.model import BEVStreamModel

        log.warning(random_weights_warning())
        return BEVStreamModel(self.model_config()).eval()

    def __call__(self) -> "BEVStreamAdapter":
        """The adapter over the model prepared once for streaming inference (perception.fuse: packed convolutions,
        batch norm folded, channels-last BEV side; same outputs within 1e-4 relative)."""
        return BEVStreamAdapter(self.build_torch_model().prepare_for_inference())


def check_checkpoint(section) -> None:
    """Load the configured weights once at start, so a file that is not a checkpoint of this model
    stops the run with one message naming model.checkpoint (instead of failing inside the actors)."""
    from runtime.config import ConfigError

    factory = ModelFactory.from_config(section)
    if factory.checkpoint is None:
        return
    try:
        factory.build_torch_model()
    except Exception as exc:  # noqa: BLE001 - any load failure is a configuration problem here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"runtime.yaml: model.checkpoint: cannot load {factory.checkpoint}: {first}") from None


def detection_arrays(dets, attributes: AttributeConfig, track_ids=None) -> DetectionArrays:
    """perception.structures.Detections (ego frame) -> the message's DetectionArrays, each box's attribute named
    from its speed by the weights' thresholds."""
    boxes = dets.boxes.detach().cpu().numpy()  # (N, 9)
    return DetectionArrays("ego", boxes, dets.scores.detach().cpu().numpy(), dets.labels.detach().cpu().numpy(),
                           dets.names, attribute_names(dets.names, boxes[:, 7:9], attributes), track_ids)


class BEVStreamAdapter:
    """runtime.stages.PerceptionModel over a BEVStreamModel (rectify -> encode_images | bev_step -> heads)."""

    def __init__(self, model: Any):
        from perception.rectify import Rectifier

        self.model = model
        self._rectifier_cls = Rectifier
        self._rectifiers: dict[str, Any] = {}  # channel -> Rectifier

    def preprocess(self, images, channels, intrinsics, cam_to_ego):
        import torch

        outs = []
        for ch, im, k, ext in zip(channels, images, intrinsics, cam_to_ego):
            rect = self._rectifiers.get(ch)
            if rect is None:  # one per camera (its sampling grid cached inside), whatever cameras come together
                rect = self._rectifiers[ch] = self._rectifier_cls(self.model.config.rectify, (ch,))
            outs.append(rect([torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)], [k], [ext]))
        images = torch.cat([o.images for o in outs])[None]  # (1, N, 3, H, W)
        return (images, torch.cat([o.intrinsics for o in outs]).numpy(),  # (N, 3, 3)
                torch.cat([o.cam_to_ego for o in outs]).numpy())  # (N, 4, 4)

    def encode(self, x):
        import torch

        with torch.no_grad():
            feats, seg_logits = self.model.encode_images(x)  # (1, N, C, h, w), (1, N, K, H/4, W/4)
        return feats.numpy(), seg_logits[0].argmax(dim=1).to(torch.uint8).numpy()  # (N, H/4, W/4)

    def step(self, feats, inputs, state):
        import torch

        from perception.model import ModelInputs

        mi = ModelInputs(
            images=torch.empty(0),  # bev_step reads features, not images
            intrinsics=torch.from_numpy(inputs.intrinsics),
            cam_to_ego=torch.from_numpy(inputs.cam_to_ego),
            camera_mask=torch.from_numpy(inputs.camera_mask),
            ego_to_global=torch.from_numpy(inputs.ego_to_global),
            timestamp_s=torch.from_numpy(inputs.timestamp_s),
            kinematics=torch.from_numpy(inputs.kinematics),
            reset=torch.from_numpy(inputs.reset),
        )
        with torch.no_grad():
            return self.model.bev_step(torch.from_numpy(feats), mi, state)

    def warm_up(self) -> None:
        """Compile (or load) the post-processing kernels before the first tick (BevStage.warmup)."""
        self.model.warm_up_postprocess()

    def decode(self, outputs, track_filter=None):
        """Heads' decoding as in BEVStreamModel.postprocess (minus the image seg, done in encode); the
        track filter is the stream's tracker bound to this tick (BoxTracker.track_filter)."""
        filters = None if track_filter is None else [track_filter]
        dets = self.model.detection_head.decode(outputs["detection"], track_filters=filters)[0]
        roads = self.model.road_head.vectorize(outputs["road_logits"])[0]
        arrays = detection_arrays(dets, self.model.config.attributes, getattr(track_filter, "track_ids", None))
        lines = [Polyline(cls, line) for cls, items in roads.items() for line in items]
        return arrays, lines

    def new_state(self):
        return self.model.initial_state(1)

    def new_tracker(self):
        return self.model.new_tracker()

    def state_to_bytes(self, state) -> bytes:
        return b"" if state is None else state.to_bytes()

    def state_from_bytes(self, data: bytes):
        from perception.state import TemporalState

        return None if not data else TemporalState.from_bytes(data)
