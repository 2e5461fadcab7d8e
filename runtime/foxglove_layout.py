"""The Foxglove layout of a recorded run (`run.mcap`, runtime/recording.py): the six cameras in the rig's
2 x 3 grid (each with the tick's boxes and road lines projected through its calibration), the 3D view
following the ego car, and a plot of the per-stage timings and drops.

Built with the SDK's own layout types (foxglove.layouts), so the panel settings are spelled as Foxglove reads
them; `layout_json()` is what `docs/foxglove-layout.json` holds and what `--record` writes beside the run.
"""
from __future__ import annotations

import json

import foxglove.layouts as fl

# The grid as a driver sees it: front row left to right, back row as seen looking back over the shoulder.
CAMERA_GRID = (("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"), ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"))
# Timing series of the plot: (message path, label). Stage names as the runtime's StageTiming.stage.
TIMING_SERIES = (("/timing.latency_ms", "latency ms"), ("/timing.stage_ms.ingest", "ingest ms"),
                 ("/timing.stage_ms.backbone", "backbone ms"), ("/timing.stage_ms.bev", "bev ms"),
                 ("/timing.stage_ms.deliver", "deliver ms"), ("/timing.dropped_total", "drops so far"))
_SCENE_TOPICS = ("/scene", "/ground_truth")


def _camera(channel: str) -> fl.ImagePanel:
    topics = {t: fl.BaseRendererSceneUpdateTopicSettings(visible=True) for t in _SCENE_TOPICS}
    return fl.ImagePanel(title=channel, config=fl.ImageConfig(
        topics=topics,
        image_mode=fl.ImageModeConfig(image_topic=f"/{channel}/image", calibration_topic=f"/{channel}/calibration")))


def _row(panels: list, proportion: float = 1) -> fl.SplitItem:
    return fl.SplitItem(proportion=proportion, content=fl.SplitContainer(
        direction="row", items=[fl.SplitItem(content=p) for p in panels]))


def build_layout() -> fl.Layout:
    """Cameras on top (two rows), the 3D view and the timing plot below, side by side."""
    cameras = [_row([_camera(ch) for ch in row]) for row in CAMERA_GRID]
    three_d = fl.ThreeDeePanel(title="BEV", config=fl.ThreeDeeConfig(
        follow_tf="ego", follow_mode="follow-pose",
        topics={t: fl.BaseRendererSceneUpdateTopicSettings(visible=True) for t in _SCENE_TOPICS},
        camera_state=fl.ThreeDeeCameraState(distance=70.0, perspective=False, phi=0.0)))
    plot = fl.PlotPanel(title="timing", config=fl.PlotConfig(
        paths=[fl.PlotSeries(value=path, label=label, enabled=True, timestamp_method="receiveTime")
               for path, label in TIMING_SERIES],
        show_legend=True, x_axis_val="timestamp", y_axis_label="ms"))
    bottom = _row([three_d, plot], proportion=1.4)
    return fl.Layout(content=fl.SplitContainer(direction="column", items=cameras + [bottom]))


def layout_json() -> str:
    """The layout as indented JSON (stable, so the copy in docs/ can be compared with it)."""
    return json.dumps(json.loads(build_layout().to_json()), indent=2, sort_keys=True)


if __name__ == "__main__":  # python -m runtime.foxglove_layout > docs/foxglove-layout.json
    print(layout_json())
