"""`--record`: a run as `RUN/run.mcap` for Foxglove, written by a thread of its own.

The tick path only hands over references: `RecordingSource` wraps any FrameSource and passes each FrameSet
(replay) or raw CameraFrame (a live source's bus) to the recorder as the runtime reads it, and the driver loop
passes each TickResult / DropRecord (`Recorder.result`). Those go into a bounded queue; the writer thread
encodes and writes them (JPEG encoding releases the GIL). Without `--record` none of this exists: the runtime
runs exactly as before.

Everything is stamped on the log's own clock (sensor timestamps), so the file replays at the drive's pace:

  /CAM_*/image        CompressedImage (JPEG): the original file where the source gives it, else encoded here
  /CAM_*/calibration  CameraCalibration for that image
  /CAM_*/segmentation the tick's per-camera label map in colour (PNG, model resolution)
  /tf                 FrameTransforms global -> ego (at each camera's exposure) and ego -> camera
  /scene              SceneUpdate, one per tick: boxes, track ids, velocity arrows, road lines (ego frame)
  /ground_truth       SceneUpdate of the source's annotations, where it has them (global frame)
  /timing             JSON (schema foxglove_scene.TIMING_SCHEMA): stage ms, latency, drops, one per frame set
  /drops              JSON: each DropRecord (reason, detail)

A topic's log times never go backwards (an out-of-order message is stamped at the topic's last time; its
own timestamp stays in the message), so every topic reads back in order.
"""
from __future__ import annotations

import io
import json
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import foxglove
import numpy as np
from foxglove.channels import (CameraCalibrationChannel, CompressedImageChannel, FrameTransformsChannel,
                               SceneUpdateChannel)
from foxglove.mcap import MCAPCompression, MCAPWriteOptions
from PIL import Image

from runtime import foxglove_scene as fs_msg
from runtime.foxglove_layout import layout_json
from schema.messages import CAMERA_CHANNELS, CameraFrame, FrameSet
from schema.results import DropRecord, TickResult

MCAP_NAME = "run.mcap"
LAYOUT_NAME = "foxglove-layout.json"
_STOP = object()

# (FrameSet) -> (boxes (N, 9) global frame, class names) of the set's annotations, or None (no ground truth).
GroundTruth = Callable[[FrameSet], "tuple[np.ndarray, list[str]] | None"]


class Recorder:
    """Writes a run to an MCAP file in a background thread; `frame_set`, `camera` and `result` only enqueue.

    `jpeg_bytes(frame)` may return the camera's original JPEG (a replay reads it from the dataroot instead of
    encoding the decoded pixels again); `ground_truth(frame_set)` adds /ground_truth. When the queue is full a
    replay waits (the file loses nothing); a live stream (`drop_when_full`) skips that camera image or frame set
    and counts it, so the recording never holds up the bus; results are never skipped."""

    def __init__(self, path: str | Path, *, jpeg_bytes: Callable[[CameraFrame], bytes | None] | None = None,
                 ground_truth: GroundTruth | None = None, drop_when_full: bool = False, max_queue: int = 32,
                 jpeg_quality: int = 85, min_score: float = 0.3):
        self.path = Path(path)
        self.jpeg_bytes, self.ground_truth = jpeg_bytes, ground_truth
        self.drop_when_full, self.jpeg_quality, self.min_score = drop_when_full, jpeg_quality, min_score
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="bevstream-recorder", daemon=True)
        self._last_ns: dict[str, int] = {}
        self._error: BaseException | None = None
        self.stats = {"ticks": 0, "drops": 0, "images": 0, "skipped_full": 0, "reordered": 0}

    # -- the tick path: enqueue references only ---------------------------------------------
    def start(self) -> "Recorder":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ctx = foxglove.Context()
        # LZ4 in this thread: the bulk is JPEG, which zstd cannot shrink either (1 % larger file, ~40 % less CPU
        # per tick than the SDK's default multi-threaded zstd, measured on the real scene)
        options = MCAPWriteOptions(compression=MCAPCompression.Lz4, compression_threads=0)
        self._writer = foxglove.open_mcap(self.path, allow_overwrite=True, context=self._ctx, writer_options=options)
        self._open_channels()
        self._thread.start()
        return self

    def _put(self, item: Any, droppable: bool = True) -> None:
        if self.drop_when_full and droppable:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.stats["skipped_full"] += 1
        else:
            self._queue.put(item)

    def frame_set(self, frame_set: FrameSet) -> None:
        self._put(("set", frame_set))

    def camera(self, frame: CameraFrame) -> None:
        self._put(("camera", frame))

    def result(self, record: TickResult | DropRecord) -> None:
        """(Never skipped: a record is small, and each tick must have its scene message.)"""
        self._put(("record", record), droppable=False)

    def close(self) -> dict:
        """Write what is queued, finish the file; -> stats (counts of what was written or skipped)."""
        self._queue.put(_STOP)
        self._thread.join()
        self._writer.close()
        if self._error is not None:
            raise RuntimeError(f"recording {self.path} failed: {self._error!r}") from self._error
        return dict(self.stats)

    def wrap(self, source: Any) -> "RecordingSource":
        return RecordingSource(source, self)

    # -- the writer thread --------------------------------------------------------------------
    def _open_channels(self) -> None:
        ctx = self._ctx
        self._images = {ch: CompressedImageChannel(f"/{ch}/image", context=ctx) for ch in CAMERA_CHANNELS}
        self._calibs = {ch: CameraCalibrationChannel(f"/{ch}/calibration", context=ctx) for ch in CAMERA_CHANNELS}
        self._segs = {ch: CompressedImageChannel(f"/{ch}/segmentation", context=ctx) for ch in CAMERA_CHANNELS}
        self._tf = FrameTransformsChannel("/tf", context=ctx)
        self._scene = SceneUpdateChannel("/scene", context=ctx)
        self._gt = SceneUpdateChannel("/ground_truth", context=ctx)
        self._timing = foxglove.Channel("/timing", schema=fs_msg.TIMING_SCHEMA, context=ctx)
        self._drops = foxglove.Channel("/drops", schema={"type": "object", "title": "bevstream.Drop"}, context=ctx)

    def _log(self, channel: Any, topic: str, msg: Any, timestamp_us: int) -> None:
        """Log at the sensor time, never before the topic's last message."""
        t = int(timestamp_us) * 1000
        last = self._last_ns.get(topic)
        if last is not None and t < last:
            t = last
            self.stats["reordered"] += 1
        self._last_ns[topic] = t
        channel.log(msg, log_time=t)

    def _run(self) -> None:
        dropped = 0
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # keep draining so the tick path never blocks on a dead writer
            kind, obj = item
            try:
                if kind == "camera":
                    self._write_camera(obj)
                elif kind == "set":
                    self._write_set(obj)
                else:
                    dropped += isinstance(obj, DropRecord)
                    self._write_record(obj, dropped)
            except Exception as exc:  # noqa: BLE001 - reported by close(); the run itself goes on
                self._error = exc

    def _write_camera(self, frame: CameraFrame) -> None:
        data = self.jpeg_bytes(frame) if self.jpeg_bytes is not None else None
        if data is None:
            data = fs_msg.jpeg(frame.image, self.jpeg_quality)
            width, height = frame.size
        else:
            width, height = Image.open(io.BytesIO(data)).size  # the header only
        ch, ts = frame.channel, frame.timestamp_us
        self._log(self._tf, "/tf", fs_msg.camera_transforms(frame), ts)
        self._log(self._calibs[ch], f"/{ch}/calibration", fs_msg.calibration(frame, width, height), ts)
        self._log(self._images[ch], f"/{ch}/image", fs_msg.camera_image(frame, data), ts)
        self.stats["images"] += 1

    def _write_set(self, frame_set: FrameSet) -> None:
        for frame in sorted(frame_set.cameras, key=lambda c: c.timestamp_us):
            self._write_camera(frame)
        gt = self.ground_truth(frame_set) if self.ground_truth is not None else None
        if gt is not None:
            boxes, names = gt
            self._log(self._gt, "/ground_truth", fs_msg.ground_truth_update(boxes, names, frame_set.timestamp_us),
                      frame_set.timestamp_us)

    def _write_record(self, record: TickResult | DropRecord, dropped_total: int) -> None:
        ts = record.timestamp_us
        if isinstance(record, DropRecord):
            self._log(self._drops, "/drops", json.dumps(record.to_json()), ts)
            self.stats["drops"] += 1
        else:
            self._log(self._scene, "/scene", fs_msg.scene_update(record, self.min_score), ts)
            for ch, labels in zip(record.seg_channels, record.seg):
                if labels.size:
                    img = fs_msg.camera_image_of(ch, ts, fs_msg.segmentation_png(labels), "png")
                    self._log(self._segs[ch], f"/{ch}/segmentation", img, ts)
            self.stats["ticks"] += 1
        self._log(self._timing, "/timing", json.dumps(fs_msg.timing_message(record, dropped_total)), ts)


class RecordingSource:
    """A FrameSource that hands what it yields to a Recorder: every FrameSet of `frame_sets()` and, for a live
    source synchronised by the runtime, every raw frame of `camera_frames()`. Everything else (is_live,
    describe, decode_for, the rig's offsets, stats) is the wrapped source's."""

    def __init__(self, source: Any, recorder: Recorder):
        self._source, self._recorder = source, recorder

    def __getattr__(self, name: str) -> Any:
        if name == "camera_frames" and hasattr(self._source, "camera_frames"):
            return self._camera_frames
        if name == "frame_sets":
            return self._frame_sets
        return getattr(self._source, name)

    def __len__(self) -> int:
        return len(self._source)

    def decode_for(self, needed_size: Any, workers: int = 1, defer: bool = False) -> None:
        """The wrapped source's, always decoding here: the recorder writes the pixels the runtime gets."""
        inner = getattr(self._source, "decode_for", None)  # a source without it decodes as it always does
        if inner is not None:
            inner(needed_size, workers=workers)

    def _frame_sets(self) -> Iterator[FrameSet]:
        for frame_set in self._source.frame_sets():
            self._recorder.frame_set(frame_set)
            yield frame_set

    def _camera_frames(self) -> Iterator[CameraFrame]:
        for frame in self._source.camera_frames():
            self._recorder.camera(frame)
            yield frame


def write_layout(path: str | Path) -> Path:
    """Write the Foxglove layout (six cameras, the 3D view, the timing plot) as JSON to `path`."""
    path = Path(path)
    path.write_text(layout_json() + "\n")
    return path
