"""Training loop: loss decreases, checkpoint -> resume reproduces an uninterrupted run, schedule, sampler."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from lab.samplers import StepSampler, StreamSampler
from lab.training import TrainConfig, lr_factor, read_curve, train
from perception.checkpoint import load_checkpoint


class TinyClipModel(nn.Module):
    """A recurrent toy with dropout: the state is carried through the clip as in BEVStreamModel.forward_clip."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, 16)
        self.rec = nn.Linear(16, 16)
        self.drop = nn.Dropout(0.1)
        self.out = nn.Linear(16, 1)

    def forward_clip(self, clip_inputs: list[torch.Tensor], clip_targets: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        h = torch.zeros(clip_inputs[0].shape[0], 16)
        losses = []
        for x, y in zip(clip_inputs, clip_targets):  # (B, dim), (B,)
            h = torch.tanh(self.inp(x) + self.rec(h))
            losses.append(((self.out(self.drop(h)).squeeze(-1) - y) ** 2).mean())
        mse = torch.stack(losses).mean()
        return {"mse": mse, "l2": 1e-4 * sum((p**2).sum() for p in self.parameters())}


class ToyClips(torch.utils.data.Dataset):
    """Clip i: fixed inputs from i; the target is the running sum of the first feature; the item seed adds noise (an 'augmentation')."""

    def __init__(self, n: int = 16, length: int = 3, dim: int = 8) -> None:
        self.n, self.length, self.dim = n, length, dim

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        index, epoch, seed = item
        x = torch.from_numpy(np.random.default_rng(index).normal(size=(self.length, self.dim)).astype(np.float32))
        x = x + 0.01 * torch.from_numpy(np.random.default_rng(seed).normal(size=x.shape).astype(np.float32))
        y = torch.cumsum(x[:, 0], 0) * 0.5
        return x, y


def collate(items):
    xs = torch.stack([x for x, _ in items])  # (B, L, dim)
    ys = torch.stack([y for _, y in items])  # (B, L)
    return [xs[:, t] for t in range(xs.shape[1])], [ys[:, t] for t in range(ys.shape[1])]


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=4, lr=1e-2, warmup_steps=2, checkpoint_every=5, num_workers=0, seed=3, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_loss_decreases(tmp_path):
    torch.manual_seed(0)
    result = train(TinyClipModel(), ToyClips(), collate, _cfg(steps=80, lr=2e-2), tmp_path)
    losses = [r["mse"] for r in read_curve(tmp_path / "curve.jsonl")]
    assert len(losses) == 80 == result.final_step
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "step_0000080.pt").is_file()


def test_resume_continues_like_an_uninterrupted_run(tmp_path):
    cfg = _cfg(num_workers=1)  # one worker process: per-item seeds must make it deterministic too
    torch.manual_seed(0)
    train(TinyClipModel(), ToyClips(), collate, cfg, tmp_path / "a")
    torch.manual_seed(0)
    part = train(TinyClipModel(), ToyClips(), collate, cfg, tmp_path / "b", stop_at=7)
    assert part.final_step == 7
    assert load_checkpoint(tmp_path / "b")["step"] == 7
    torch.manual_seed(123)  # a fresh process would start with another global RNG state: resume must restore it
    rest = train(TinyClipModel(), ToyClips(), collate, cfg, tmp_path / "b", resume=True)
    assert rest.steps_run == 5 and rest.final_step == 12
    a = read_curve(tmp_path / "a" / "curve.jsonl")
    b = read_curve(tmp_path / "b" / "curve.jsonl")
    assert [r["step"] for r in b] == list(range(1, 13))
    for ra, rb in zip(a, b):
        assert ra["loss"] == rb["loss"] and ra["lr"] == rb["lr"], (ra, rb)
    sa, sb = load_checkpoint(tmp_path / "a")["model"], load_checkpoint(tmp_path / "b")["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


def test_resume_truncates_curve_rows_after_the_checkpoint(tmp_path):
    cfg = _cfg(checkpoint_every=4, steps=8)
    train(TinyClipModel(), ToyClips(), collate, cfg, tmp_path, stop_at=6)  # checkpoints at 4 and 6
    # pretend the run was killed after logging steps 7-9 but before their checkpoint
    with open(tmp_path / "curve.jsonl", "a") as f:
        for s in (7, 8, 9):
            f.write(json.dumps({"step": s, "loss": -1.0}) + "\n")
    train(TinyClipModel(), ToyClips(), collate, cfg, tmp_path, resume=True)
    rows = read_curve(tmp_path / "curve.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9)) and all(r["loss"] >= 0 for r in rows)


def test_resume_rejects_another_model_config(tmp_path):
    train(TinyClipModel(), ToyClips(), collate, _cfg(steps=2), tmp_path, model_config={"video": True})
    with pytest.raises(ValueError, match="model config differs"):
        train(TinyClipModel(), ToyClips(), collate, _cfg(steps=4), tmp_path, resume=True, model_config={"video": False})
    with pytest.raises(FileNotFoundError):
        train(TinyClipModel(), ToyClips(), collate, _cfg(), tmp_path / "empty", resume=True)


def test_resume_completes_a_saved_config_from_before_a_key_was_added(tmp_path):
    train(TinyClipModel(), ToyClips(), collate, _cfg(steps=2), tmp_path, model_config={"video": True})
    with_default = lambda saved: {"still_speed": 0.0, **saved}  # noqa: E731  the key's default, as the schema fills it
    resumed = train(TinyClipModel(), ToyClips(), collate, _cfg(steps=4), tmp_path, resume=True,
                    model_config={"video": True, "still_speed": 0.0}, complete_model_config=with_default)
    assert resumed.steps_run == 2 and resumed.final_step == 4
    with pytest.raises(ValueError, match="model config differs"):  # a value other than the default is another model
        train(TinyClipModel(), ToyClips(), collate, _cfg(steps=6), tmp_path, resume=True,
              model_config={"video": True, "still_speed": 1.0}, complete_model_config=with_default)


def test_init_from_starts_a_fresh_run_from_the_weights(tmp_path):
    torch.manual_seed(0)
    first = train(TinyClipModel(), ToyClips(), collate, _cfg(steps=20), tmp_path / "a")
    torch.manual_seed(1)
    model = TinyClipModel()
    # stop_at=0 takes no step: the model holds exactly the loaded weights
    train(model, ToyClips(), collate, _cfg(steps=20), tmp_path / "b", init_from=first.checkpoint, stop_at=0)
    saved = load_checkpoint(tmp_path / "a")["model"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)
    # a full fine-tuning run: its own step count and schedule (warm-up again), from the loaded weights
    tuned = train(TinyClipModel(), ToyClips(), collate, _cfg(steps=6), tmp_path / "c", init_from=tmp_path / "a")
    rows = read_curve(tmp_path / "c" / "curve.jsonl")
    assert tuned.final_step == 6 and [r["step"] for r in rows] == list(range(1, 7))
    assert rows[0]["lr"] == pytest.approx(_cfg().lr * _cfg().warmup_start)
    scratch = read_curve(tmp_path / "a" / "curve.jsonl")
    assert rows[0]["mse"] < scratch[0]["mse"]  # it starts where the first run ended, not from scratch


def test_init_from_rejects_weights_of_another_model(tmp_path):
    train(TinyClipModel(dim=8), ToyClips(), collate, _cfg(steps=2), tmp_path / "a")
    with pytest.raises(ValueError, match="weights do not fit this model"):
        train(TinyClipModel(dim=5), ToyClips(dim=5), collate, _cfg(steps=2), tmp_path / "b", init_from=tmp_path / "a")


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=110, warmup_steps=10, warmup_start=0.1, min_lr_ratio=0.05)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx(0.55)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.05 + 0.95 * 0.5)  # half-way through the cosine
    assert lr_factor(110, cfg) == pytest.approx(0.05)
    f = [lr_factor(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(f, f[1:]))


def test_step_sampler_covers_each_epoch_and_is_a_function_of_the_step():
    s = StepSampler(n=10, batch_size=4, steps=10, seed=1)
    batches = list(s)
    flat = [i for b in batches for (i, _, _) in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert [item[1] for item in batches[2]] == [0, 0, 1, 1]  # positions 8..11 straddle epochs 0 and 1
    resumed = list(StepSampler(n=10, batch_size=4, steps=10, seed=1, start_step=6))
    assert resumed == batches[6:]
    seeds = [item[2] for b in batches for item in b]
    assert len(set(seeds)) == len(seeds)


def test_bad_config():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"stepz": 3})


def test_resume_warns_when_the_data_settings_changed(tmp_path):
    train(TinyClipModel(), ToyClips(), collate, _cfg(steps=2), tmp_path, extra_config={"data": ["a"]})
    with pytest.warns(UserWarning, match="data settings differ"):
        train(TinyClipModel(), ToyClips(), collate, _cfg(steps=3), tmp_path, resume=True, extra_config={"data": ["b"]})


def test_trained_model_takes_runtime_overrides_over_its_saved_config(tmp_path):
    """runtime.yaml's model keys (e.g. the detection score threshold) win over the config saved with the
    weights, and the weights load unchanged; the merge leaves untouched keys as saved."""
    from perception.checkpoint import CHECKPOINT_FORMAT, load_trained_model
    from perception.config import merge_model_options, model_config_to_dict
    from perception.model import BEVStreamModel
    from tests.perception.model_fixtures import tiny_config

    torch.manual_seed(0)
    model = BEVStreamModel(tiny_config())
    saved = model_config_to_dict(model.config)
    path = tmp_path / "weights.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "step": 0, "config": {"model": saved}}, path)

    loaded = load_trained_model(path, {"detection": {"score_threshold": 0.05}})
    assert loaded.config.detection.score_threshold == 0.05
    assert loaded.config.detection.nms_iou == model.config.detection.nms_iou
    assert loaded.config.backbone == model.config.backbone
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert load_trained_model(path).config == model.config

    merged = merge_model_options({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}, "d": 3}


# ---- streaming training ---------------------------------------------------------------------------------


class ToyWalkIndex:
    """Scenes of n steps; walk_clips cuts one seeded drive (start offset 0..L-1) into clips of L."""

    def __init__(self, scene_lengths=(9, 7, 2), length: int = 3) -> None:
        self.scenes, self.length = list(scene_lengths), length

    def walk_clips(self, scene: int, key):
        start = int(np.random.default_rng((*key, scene)).integers(self.length))
        cycles = list(range(start, self.scenes[scene]))
        return [(scene, tuple(cycles[k:k + self.length])) for k in range(0, len(cycles) - self.length + 1, self.length)]


class ToyStreams(torch.utils.data.Dataset):
    """Step t of scene s has fixed inputs; the target is the running sum of the first feature over the whole
    drive, so a model can only fit it with the state carried across clips."""

    def __init__(self, dim: int = 8) -> None:
        self.index, self.dim = ToyWalkIndex(), dim

    def __len__(self) -> int:
        return 3

    def _x(self, scene: int, t: int) -> torch.Tensor:
        return torch.from_numpy(np.random.default_rng((scene, t)).normal(size=self.dim).astype(np.float32))

    def __getitem__(self, item):
        (scene, cycles), seed, continues = item
        x = torch.stack([self._x(scene, t) for t in cycles])  # (L, dim)
        x = x + 0.01 * torch.from_numpy(np.random.default_rng(seed).normal(size=x.shape).astype(np.float32))
        y = torch.stack([0.1 * sum(self._x(scene, u)[0] for u in range(t + 1)) for t in cycles])  # (L,)
        reset = torch.zeros(len(cycles), dtype=torch.bool)
        reset[0] = not continues
        return x, y, reset


def stream_collate(items):
    xs = torch.stack([x for x, _, _ in items])  # (B, L, dim)
    ys = torch.stack([y for _, y, _ in items])  # (B, L)
    rs = torch.stack([r for _, _, r in items])  # (B, L)
    return [(xs[:, t], rs[:, t]) for t in range(xs.shape[1])], [ys[:, t] for t in range(ys.shape[1])]


class TinyStreamModel(TinyClipModel):
    """TinyClipModel with the state passed in and out; a reset row starts from zeros."""

    seen_states: list

    def forward_clip(self, clip_inputs, clip_targets, state=None, return_state=False):
        self.__dict__.setdefault("seen_states", []).append(state)
        h = torch.zeros(clip_inputs[0][0].shape[0], 16) if state is None else state
        losses = []
        for (x, reset), y in zip(clip_inputs, clip_targets):  # (B, dim), (B,), (B,)
            h = torch.where(reset[:, None], torch.zeros_like(h), h)
            h = torch.tanh(self.inp(x) + self.rec(h))
            losses.append(((self.out(self.drop(h)).squeeze(-1) - y) ** 2).mean())
        out = {"mse": torch.stack(losses).mean()}
        return (out, h) if return_state else out


def test_stream_sampler_rows_walk_whole_scenes_and_batches_are_a_function_of_the_step():
    index = ToyWalkIndex()
    s = StreamSampler(index, batch_size=2, steps=12, seed=4)
    batches = list(s)
    for b in range(2):
        row = [batch[b] for batch in batches]
        for prev, cur in zip(row, row[1:]):
            if cur.continues:
                assert cur.clip[0] == prev.clip[0] and cur.clip[1][0] == prev.clip[1][-1] + 1, "continues the same drive"
                assert cur.seed == prev.seed, "one augmentation per drive"
            else:
                assert cur.clip[1][0] < index.length, "a new drive starts at its scene's start"
        # epoch 0 of the row: every scene long enough, once, whole
        n0 = sum(len(index.walk_clips(sc, (4, 0, b))) for sc in range(3))
        assert sorted({item.clip[0] for item in row[:n0]}) == [0, 1]
    assert list(StreamSampler(index, batch_size=2, steps=12, seed=4, start_step=5)) == batches[5:]
    assert list(StreamSampler(index, batch_size=2, steps=12, seed=5)) != batches, "the seed matters"
    with pytest.raises(ValueError, match="no scene"):
        StreamSampler(ToyWalkIndex(scene_lengths=(2,)), batch_size=1, steps=3)


def test_streaming_training_carries_the_detached_state_and_resumes_exactly(tmp_path):
    cfg = _cfg(batch_size=2, stream=True, steps=10, checkpoint_every=4)
    torch.manual_seed(0)
    model = TinyStreamModel()
    train(model, ToyStreams(), stream_collate, cfg, tmp_path / "a")
    states = model.seen_states
    assert states[0] is None and all(isinstance(s, torch.Tensor) for s in states[1:]), "the state carries from step to step"
    assert not any(s.requires_grad for s in states[1:]), "carried detached"
    torch.manual_seed(0)
    train(TinyStreamModel(), ToyStreams(), stream_collate, cfg, tmp_path / "b", stop_at=6)
    assert load_checkpoint(tmp_path / "b")["stream_state"] is not None
    torch.manual_seed(99)
    train(TinyStreamModel(), ToyStreams(), stream_collate, cfg, tmp_path / "b", resume=True)
    a, b = read_curve(tmp_path / "a" / "curve.jsonl"), read_curve(tmp_path / "b" / "curve.jsonl")
    assert [r["loss"] for r in a] == [r["loss"] for r in b], "resume restores the carried state too"


def test_streaming_training_needs_a_walkable_index(tmp_path):
    with pytest.raises(ValueError, match="walk_clips"):
        train(TinyClipModel(), ToyClips(), collate, _cfg(stream=True), tmp_path)


def test_save_model_options_rewrites_one_section_and_the_model_reads_it(tmp_path):
    """`bevstream calibrate --write`: the attribute thresholds and NMS radii update their sections of the saved
    config; weights, other keys and other sections stay; a bad value is refused before the file changes."""
    from perception.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, load_trained_model, save_model_options
    from perception.config import model_config_to_dict
    from perception.model import BEVStreamModel
    from tests.perception.model_fixtures import tiny_config

    torch.manual_seed(0)
    model = BEVStreamModel(tiny_config())
    path = tmp_path / "weights.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "step": 7,
                "config": {"model": model_config_to_dict(model.config), "train": {"lr": 1e-3}}}, path)
    thresholds = {"vehicle_moving_mps": 2.5, "pedestrian_moving_mps": 0.1, "cycle_moving_mps": 1.5}
    save_model_options(path, "attributes", thresholds)
    loaded = load_trained_model(path)
    assert loaded.config.attributes.vehicle_moving_mps == 2.5 and loaded.config.attributes.cycle_moving_mps == 1.5
    assert loaded.config.detection == model.config.detection
    state = load_checkpoint(path)
    assert state["step"] == 7 and state["config"]["train"] == {"lr": 1e-3}
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    before = path.read_bytes()
    with pytest.raises(ValueError, match="vehicle_moving_mps"):
        save_model_options(path, "attributes", {"vehicle_moving_mps": -1.0})
    assert path.read_bytes() == before
    radii = [2.0, 4.0, 2.5, 4.0, 4.0, 2.5, 4.0, 0.0, 2.5, 2.0]
    save_model_options(path, "detection", {"nms_radius_m": radii})  # the other keys of the section stay
    loaded = load_trained_model(path)
    assert loaded.config.detection == dataclasses.replace(model.config.detection, nms_radius_m=tuple(radii))
    assert loaded.config.attributes.vehicle_moving_mps == 2.5


def test_weights_older_than_a_zero_initialised_branch_load_into_the_model(tmp_path):
    """Weights saved before the motion fusion's wide path (config without the key) load with the path
    fresh (zero output), so shipped files keep working as the architecture grows."""
    import dataclasses

    from perception.checkpoint import CHECKPOINT_FORMAT, load_trained_model
    from perception.config import model_config_to_dict
    from perception.model import BEVStreamModel
    from tests.perception.model_fixtures import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config()
    old = BEVStreamModel(dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, motion_wide_dilation=0)))
    saved = model_config_to_dict(old.config)
    del saved["video"]["motion_wide_dilation"]  # a file written before the key existed
    path = tmp_path / "old.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": old.state_dict(), "step": 0, "config": {"model": saved}}, path)
    loaded = load_trained_model(path)
    assert loaded.video.motion.wide is not None
    assert all(int(torch.count_nonzero(p.detach())) == 0 for p in loaded.video.motion.wide[-1].parameters())
    for name, tensor in old.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_average_weights_is_the_parameter_mean_and_loads(tmp_path):
    """`bevstream average`: every floating-point tensor is the mean over the files (against a per-tensor
    reference), batch counters and the config are the first file's, the result loads as a model; files of
    another architecture, or a single file, are refused before anything is written."""
    from perception.checkpoint import CHECKPOINT_FORMAT, average_weights, load_trained_model
    from perception.config import model_config_to_dict
    from perception.model import BEVStreamModel
    from tests.perception.model_fixtures import tiny_config

    paths, models = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        model = BEVStreamModel(tiny_config())
        for buf in model.buffers():  # distinct batch counters, to see whose are kept
            if not buf.is_floating_point() and buf.ndim == 0:
                buf.fill_(10 + seed)
        paths.append(tmp_path / f"w{seed}.pt")
        torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "step": 100 * seed,
                    "config": {"model": model_config_to_dict(model.config), "train": {"seed": seed}}}, paths[-1])
        models.append(model)
    out = average_weights(paths, tmp_path / "soup.pt")
    state = load_checkpoint(out)
    for name, first in models[0].state_dict().items():
        tensors = [m.state_dict()[name] for m in models]
        if first.is_floating_point():
            expect = torch.stack([t.double() for t in tensors]).mean(0).to(first.dtype)
            assert torch.allclose(state["model"][name], expect, atol=1e-6), name
        else:
            assert torch.equal(state["model"][name], first), name
    assert state["config"]["train"] == {"seed": 0} and [a["step"] for a in state["averaged_from"]] == [0, 100, 200]
    # the inputs lie outside the working directory: only their names are recorded, never this machine's paths
    assert [a["path"] for a in state["averaged_from"]] == [p.name for p in paths]
    loaded = load_trained_model(out)
    assert loaded.config == models[0].config

    other = BEVStreamModel(dataclasses.replace(tiny_config(), detection=dataclasses.replace(tiny_config().detection, hidden_channels=24)))
    torch.save({"format": CHECKPOINT_FORMAT, "model": other.state_dict(), "step": 0,
                "config": {"model": model_config_to_dict(other.config)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is another architecture"):
        average_weights([paths[0], tmp_path / "other.pt"], tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="at least two"):
        average_weights(paths[:1], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_lr_scales_give_matching_parameters_their_own_rate_through_the_schedule(tmp_path):
    from lab.training import make_optimizer, param_lr_scale

    cfg = _cfg(steps=4, lr_scales=(("rec.*", 10.0),))
    assert param_lr_scale("rec.weight", cfg) == 10.0 and param_lr_scale("inp.weight", cfg) == 1.0
    model = TinyClipModel()
    opt = make_optimizer(model, cfg)
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model.rec.weight)] == (cfg.lr * 10, cfg.weight_decay)
    assert by_param[id(model.rec.bias)] == (cfg.lr * 10, 0.0)
    assert by_param[id(model.inp.weight)] == (cfg.lr, cfg.weight_decay) and opt.param_groups[0]["lr"] == cfg.lr
    train(model, ToyClips(), collate, cfg, tmp_path)
    rows = read_curve(tmp_path / "curve.jsonl")
    saved = TrainConfig.from_dict(load_checkpoint(tmp_path)["config"]["train"])
    assert saved.lr_scales == cfg.lr_scales, "the scales survive the checkpoint (resume rebuilds the same groups)"
    train(TinyClipModel(), ToyClips(), collate, _cfg(steps=4), tmp_path / "plain")
    assert [r["lr"] for r in rows] == [r["lr"] for r in read_curve(tmp_path / "plain" / "curve.jsonl")], "the logged rate is the base rate"
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(lr_scales=(("x", 0.0),))
