"""BEVStreamModel: six cameras in, BEV detections + road geometry + per-camera segmentation out, streaming.

    images (B, Ncam, 3, H, W) --Backbone (shared, cameras batched)--> feats (B, Ncam, C, H/16, W/16)
                                (with model.bev.fine_level the stride-8 map folded in: C + 4*Cs channels)
                                +--SegmentationHead--> seg logits (B, Ncam, K, H/4, W/4)
    feats + calibration --BEVEncoder--> bev (B, C, Hb, Wb)
    bev + poses/time/kinematics + TemporalState --VideoModule--> fused bev, new state
    fused bev --DetectionHead / RoadHead--> detections, road masks
    feats --DepthHead--> depth-bin logits (B, Ncam, D, H/16, W/16), in training only and where enabled;
                         with depth-aware attention always, and the BEVEncoder reads them

`forward(inputs, state) -> (outputs, state)` is the streaming entry point; the runtime may run its two
halves in different actors: `encode_images` (per-camera work) and `bev_step` (BEV + temporal + heads).
`forward_clip` trains over consecutive frames, carrying the state through the clip.
Images reach the model already rectified and resized (perception.rectify.Rectifier).
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from schema.attributes import AttributeConfig
from perception.backbone import Backbone, BackboneConfig, fold_fine_level
from perception.bev_encoder import BEVEncoder, BEVEncoderConfig
from perception.boxes import CODE_SIZE
from perception.depth import DepthHead, DepthHeadConfig
from schema.classes import ROAD_CLASSES
from perception.detection import DetectionHead, DetectionHeadConfig
from perception.grid import BEVGrid
from perception.rectify import RectifyConfig
from perception.road import RoadHead, RoadHeadConfig
from perception.segmentation import SegHeadConfig, SegmentationHead, upsample_logits
from perception.state import TemporalState
from perception.tracking import BoxTracker, TrackingConfig
from perception.video import VideoConfig, VideoModule

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LossWeights:
    seg: float = 1.0
    det_cls: float = 2.0  # the slowest term to fall (curve.jsonl of the first 1000-step run)
    det_reg: float = 1.0
    road: float = 1.0


@dataclass(frozen=True)
class ModelConfig:
    grid: BEVGrid = BEVGrid()
    rectify: RectifyConfig = RectifyConfig()  # its image_size is the model input size
    backbone: BackboneConfig = BackboneConfig()
    seg: SegHeadConfig = SegHeadConfig()
    bev: BEVEncoderConfig = BEVEncoderConfig()
    video: VideoConfig = VideoConfig()
    # Heads slimmed from their own defaults to fit the 50 ms tick (bench/model.py): ~0.25 + ~0.2 GFLOP.
    detection: DetectionHeadConfig = DetectionHeadConfig(hidden_channels=32)
    road: RoadHeadConfig = RoadHeadConfig(hidden_channels=16)
    loss: LossWeights = LossWeights()
    attributes: AttributeConfig = AttributeConfig()  # speed thresholds of the submission attributes (bevstream calibrate)
    depth: DepthHeadConfig = DepthHeadConfig()  # lidar depth supervision of the camera features (off by default)
    tracking: TrackingConfig = TrackingConfig()  # velocity, still centres and score along each track (perception.tracking)
    num_cameras: int = 6

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.rectify.image_size)


@dataclass
class ModelInputs:
    """One tick for B streams. Images already rectified/resized to the model input size."""

    images: torch.Tensor  # (B, Ncam, 3, H, W) float in [0, 1]
    intrinsics: torch.Tensor  # (B, Ncam, 3, 3)
    cam_to_ego: torch.Tensor  # (B, Ncam, 4, 4)
    camera_mask: torch.Tensor  # (B, Ncam) bool; False: camera missing this tick
    ego_to_global: torch.Tensor  # (B, 4, 4) float64
    timestamp_s: torch.Tensor  # (B,) float64
    kinematics: torch.Tensor  # (B, 7) EgoKinematics.as_array
    reset: torch.Tensor  # (B,) bool: new scene, forget the temporal state

    def validate(self, num_cameras: int, image_size: tuple[int, int]) -> None:
        b = self.images.shape[0]
        expect = {
            "images": (b, num_cameras, 3, *image_size),
            "intrinsics": (b, num_cameras, 3, 3),
            "cam_to_ego": (b, num_cameras, 4, 4),
            "camera_mask": (b, num_cameras),
            "ego_to_global": (b, 4, 4),
            "timestamp_s": (b,),
            "kinematics": (b, 7),
            "reset": (b,),
        }
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"ModelInputs.{name} has shape {got}, expected {shape}")


@dataclass
class Targets:
    """Training targets of one tick."""

    gt_boxes: list[torch.Tensor]  # B x (N_b, 9) ego x, y, z, w, l, h, yaw, vx, vy
    gt_labels: list[torch.Tensor]  # B x (N_b,) int64 into DETECTION_NAMES
    road_masks: torch.Tensor  # (B, 2, H_r, W_r) float {0, 1}, ROAD_CLASSES
    seg_labels: torch.Tensor  # (B, Ncam, H, W) int64 into SEG_CLASSES, 255 = ignore
    depth_bins: torch.Tensor | None = None  # (B, Ncam, H/16, W/16) int64 depth bins, 255 = no lidar return


@dataclass
class ModelOutputs:
    detection: dict[str, torch.Tensor]  # DetectionHead.forward output
    road_logits: torch.Tensor  # (B, 2, H_r, W_r)
    seg_logits: torch.Tensor  # (B, Ncam, K, H/4, W/4)
    bev: torch.Tensor  # (B, C, Hb, Wb) fused BEV feature the heads read
    depth_logits: torch.Tensor | None = None  # (B, Ncam, D, H/16, W/16): training with the depth head, or depth-aware attention


class BEVStreamModel(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig(), detection_head: nn.Module | None = None, road_head: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        bb = config.backbone
        # Per-camera convs run channels-last (faster oneDNN kernels on CPU); weights stored to match.
        self.backbone = Backbone(bb).to(memory_format=torch.channels_last)
        self.seg_head = SegmentationHead(bb.out_channels, bb.skip_channels, bb.widths[1], config.seg).to(memory_format=torch.channels_last)
        self.bev_encoder = BEVEncoder(bb.out_channels, config.grid, config.image_size, Backbone.stride, config.bev, config.depth,
                                      fine_channels=bb.skip_channels)  # read only with config.bev.fine_level
        c = config.bev.channels
        self.video = VideoModule(c, config.grid, config.video) if config.video.enabled else None
        # Heads may be injected (tests, experiments); by default those of perception.detection / perception.road.
        self.detection_head = detection_head if detection_head is not None else DetectionHead(c, config.grid, config.detection)
        self.road_head = road_head if road_head is not None else RoadHead(c, config.grid, config.road)
        self.depth_head = DepthHead(bb.out_channels, config.depth) if config.depth.enabled else None

    # ------------------------------------------------------------ stages
    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Ncam, 3, H, W) -> feats (B, Ncam, C, H/16, W/16), seg logits (B, Ncam, K, H/4, W/4); with a fine
        level feats (B, Ncam, C + 4*Cs, H/16, W/16), the stride-8 map folded in (perception.backbone.fold_fine_level)."""
        if images.ndim != 5:
            raise ValueError(f"encode_images expects (B, Ncam, 3, H, W), got {tuple(images.shape)}")
        b, n = images.shape[:2]
        flat = images.reshape(b * n, *images.shape[2:])  # (B*Ncam, 3, H, W)
        if torch.is_grad_enabled():  # (inference: the backbone's normalisation writes channels-last itself)
            flat = flat.contiguous(memory_format=torch.channels_last)
        f = self.backbone(flat)
        seg = self.seg_head(f)
        feats = fold_fine_level(f["s16"], f["s8"]) if self.config.bev.fine_level else f["s16"].contiguous()
        return feats.view(b, n, *feats.shape[1:]), seg.contiguous().view(b, n, *seg.shape[1:])

    def initial_state(self, batch: int, device=None) -> TemporalState | None:
        return self.video.initial_state(batch, device) if self.video is not None else None

    def new_tracker(self) -> BoxTracker | None:
        """A stream's tracker of the decoded boxes (perception.tracking), None with tracking off."""
        return BoxTracker(self.config.tracking) if self.config.tracking.enabled else None

    def bev_step(self, feats: torch.Tensor, inputs: ModelInputs, state: TemporalState | None) -> tuple[dict, TemporalState | None]:
        """Camera features + calibration + ego motion + state -> head outputs and the next state.

        Returns ({'detection', 'road_logits', 'bev', 'depth_logits'}, state); depth_logits is None unless the
        depth head runs (training, or depth-aware attention). With the video module off, state passes through.
        """
        mask = inputs.camera_mask.to(feats.device).bool()
        feats = feats * mask[:, :, None, None, None].to(feats.dtype)  # missing cameras: zero features
        depth = None
        if self.depth_head is not None and (self.training or self.config.depth.attention):
            depth = self.depth_head(feats[:, :, : self.config.backbone.out_channels])  # (B, Ncam, D, Hf, Wf), stride-16 channels
        attention_depth = depth if self.config.depth.attention else None
        bev = self.bev_encoder(feats, inputs.intrinsics, inputs.cam_to_ego, mask, attention_depth)  # (B, C, Hb, Wb)
        if self.video is not None:
            bev, state = self.video(bev, inputs.ego_to_global, inputs.timestamp_s, inputs.kinematics, inputs.reset, state)
        return {"detection": self.detection_head(bev), "road_logits": self.road_head(bev), "bev": bev, "depth_logits": depth}, state

    def forward(self, inputs: ModelInputs, state: TemporalState | None = None) -> tuple[ModelOutputs, TemporalState | None]:
        inputs.validate(self.config.num_cameras, self.config.image_size)
        feats, seg = self.encode_images(inputs.images)
        out, state = self.bev_step(feats, inputs, state)
        return ModelOutputs(detection=out["detection"], road_logits=out["road_logits"], seg_logits=seg, bev=out["bev"],
                            depth_logits=out["depth_logits"]), state

    # ------------------------------------------------------------ outputs
    @torch.no_grad()
    def postprocess(self, outputs: ModelOutputs, seg_size: tuple[int, int] | None = None,
                    track_filters=None) -> list[dict]:
        """Per item: {'detections': Detections (ego), 'road': {'lane_divider': [(N,2)], 'road_edge': [...]} (ego),
        'seg': (Ncam, H, W) uint8 label maps at `seg_size` (default: the model input size)}. `track_filters`:
        per item, a tracker's (DetectionHead.decode)."""
        dets = self.detection_head.decode(outputs.detection, track_filters=track_filters)
        roads = self.road_head.vectorize(outputs.road_logits)
        size = seg_size or self.config.image_size
        labels = upsample_logits(outputs.seg_logits, size).argmax(dim=2).to(torch.uint8)  # (B, Ncam, H, W)
        return [{"detections": d, "road": r, "seg": s} for d, r, s in zip(dets, roads, labels)]

    def warm_up_postprocess(self) -> None:
        """Decode two overlapping boxes and vectorise one line, so numba compiles (or loads from its cache)
        the NMS and road kernels now rather than on the first real tick with a box or a line."""
        head = self.detection_head
        a = head.num_anchors_per_cell
        logits = torch.full((1, head.anchors.shape[0], head.num_classes), -20.0)
        logits[0, [0, a], int(head.anchor_labels[0])] = 5.0  # anchor 0 of two neighbouring cells: they overlap
        head.decode({"cls_logits": logits, "box_deltas": torch.zeros(1, head.anchors.shape[0], CODE_SIZE)})
        road = torch.full((1, len(ROAD_CLASSES), *self.road_head.out_shape), -10.0)
        road[0, :, road.shape[2] // 2, 4:-4] = 10.0  # one straight line across each class's raster
        self.road_head.vectorize(road)

    # ------------------------------------------------------------ training
    def losses(self, outputs: ModelOutputs, targets: Targets, camera_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-tick losses: CE on segmentation (logits upsampled to the labels), detection and road heads', and
        with the depth head CE on depth bins (zero at a tick without lidar returns)."""
        labels = targets.seg_labels.long()
        if camera_mask is not None:  # no supervision for a camera the model did not see
            labels = labels.masked_fill(~camera_mask.bool()[:, :, None, None], IGNORE_INDEX)
        logits = upsample_logits(outputs.seg_logits, tuple(labels.shape[-2:]))  # (B, Ncam, K, H, W)
        if (labels != IGNORE_INDEX).any():
            seg = F.cross_entropy(logits.flatten(0, 1), labels.flatten(0, 1), ignore_index=IGNORE_INDEX)
        else:
            seg = logits.sum() * 0.0
        out = {"seg": seg}
        out.update(self.detection_head.loss(outputs.detection, targets.gt_boxes, targets.gt_labels))
        out.update(self.road_head.loss(outputs.road_logits, targets.road_masks))
        if outputs.depth_logits is not None:
            bins = targets.depth_bins
            if bins is None:  # no returns at this tick (a sweep between keyframes)
                out["depth"] = outputs.depth_logits.sum() * 0.0
            else:
                out["depth"] = DepthHead.loss(outputs.depth_logits, bins, camera_mask)
        return out

    def forward_clip(self, clip: list[ModelInputs], targets: list[Targets], state: TemporalState | None = None,
                     return_state: bool = False) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], TemporalState | None]:
        """Run consecutive ticks carrying the state (from `state`, e.g. the end of the previous clip of a
        drive); mean per-tick losses and their weighted 'total', and with `return_state` the state after
        the last tick."""
        if len(clip) != len(targets) or not clip:
            raise ValueError(f"forward_clip: {len(clip)} inputs and {len(targets)} targets (need equal, >= 1)")
        sums: dict[str, torch.Tensor] = {}
        for inp, tgt in zip(clip, targets):
            out, state = self(inp, state)
            for k, v in self.losses(out, tgt, inp.camera_mask).items():
                sums[k] = sums.get(k, 0.0) + v
        mean = {k: v / len(clip) for k, v in sums.items()}
        w = self.config.loss
        weights = {"seg": w.seg, "det_cls": w.det_cls, "det_reg": w.det_reg, "road": w.road, "depth": self.config.depth.loss_weight}
        mean["total"] = sum(weights.get(k, 1.0) * v for k, v in mean.items())
        return (mean, state) if return_state else mean


def inputs_from_numpy(
    images: np.ndarray, intrinsics: np.ndarray, cam_to_ego: np.ndarray, camera_mask: np.ndarray,
    ego_to_global: np.ndarray, timestamp_s: float, kinematics: np.ndarray, reset: bool,
) -> ModelInputs:
    """One stream's tick (no batch dim; images (Ncam, 3, H, W) float [0,1]) -> batched ModelInputs (B=1)."""
    return ModelInputs(
        images=torch.as_tensor(images, dtype=torch.float32)[None],
        intrinsics=torch.as_tensor(intrinsics, dtype=torch.float32)[None],
        cam_to_ego=torch.as_tensor(cam_to_ego, dtype=torch.float32)[None],
        camera_mask=torch.as_tensor(camera_mask, dtype=torch.bool)[None],
        ego_to_global=torch.as_tensor(ego_to_global, dtype=torch.float64)[None],
        timestamp_s=torch.tensor([timestamp_s], dtype=torch.float64),
        kinematics=torch.as_tensor(kinematics, dtype=torch.float32)[None],
        reset=torch.tensor([reset]),
    )
