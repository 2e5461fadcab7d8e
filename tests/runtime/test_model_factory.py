"""model.factory: every bad spec is one ConfigError naming the key, and any implementation of the model protocol
runs through the runtime (the minimal example of docs/model-protocol.md, read from the doc)."""
from __future__ import annotations

import importlib
import re
import sys
import threading

import pytest

from runtime.config import ConfigError, config_from_dict
from runtime.model_factory import model_factory
from tests.conftest import REPO_ROOT
from tests.runtime.conftest import small_config
from tests.runtime.fakes import ListSource, make_frame_set

DOC = REPO_ROOT / "docs" / "model-protocol.md"
HERE = __name__  # this module, importable by the specs below


class Lacking:
    """A model without step, decode and the state methods."""

    def preprocess(self, images, channels, intrinsics, cam_to_ego):
        return None

    def encode(self, x):
        return None


def builds_lacking(config):
    return Lacking


def builds_a_number(config):
    return 3


def builder_fails(config):
    raise RuntimeError("no weights here")


def builds_unpicklable(config):
    lock = threading.Lock()
    return lambda: (lock, Lacking())[1]


def _cfg(spec: str, **source):
    return config_from_dict({"model": {"factory": spec}, "source": {"nuscenes": source}})



@pytest.mark.parametrize("spec, problem", [
    (f"{HERE}.Lacking", "expected 'package.module:callable' or one of ['oracle']"),
    ("no_such_package.models:Model", "cannot import module 'no_such_package.models'"),
    (f"{HERE}:Missing", f"module '{HERE}' has no attribute 'Missing'"),
    (f"{HERE}:HERE", "'HERE' is a str, not a callable"),
    (f"{HERE}:Lacking", "lacks the protocol method(s) ['step', 'decode', 'new_state', 'state_to_bytes', 'state_from_bytes']"),
    (f"{HERE}:builds_lacking", "(Lacking) lacks the protocol method(s) ['step'"),
    (f"{HERE}:builds_a_number", "it returned a int, not a zero-arg factory"),
    (f"{HERE}:builder_fails", "calling it with the runtime config failed: RuntimeError: no weights here"),
    (f"{HERE}:builds_unpicklable", "the factory does not pickle"),
    ("oracle", "the oracle reads the log's annotations: set source.nuscenes.dataroot"),
])
def test_a_bad_spec_is_one_config_error_naming_model_factory(spec, problem):
    with pytest.raises(ConfigError) as err:
        model_factory(_cfg(spec))
    message = str(err.value)
    assert message.startswith(f"runtime.yaml: model.factory: {spec!r}: ") and "\n" not in message
    assert problem in message


def test_the_oracle_needs_annotations_at_the_dataroot(tmp_path):
    with pytest.raises(ConfigError, match=r"model.factory: 'oracle': no annotations to read: .*sample_annotation.json"):
        model_factory(_cfg("oracle", dataroot=str(tmp_path)))


def test_the_command_line_stops_before_any_actor_with_the_one_error(capsys):
    from cli.main import main

    assert main(["stream", "--model-factory", f"{HERE}:Missing", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"bevstream: config error: runtime.yaml: model.factory: '{HERE}:Missing': module '{HERE}' has no attribute 'Missing'"
    assert main(["replay", "--model", "oracel", "--no-progress"]) == 2
    assert "model.factory: 'oracel': expected 'package.module:callable' or one of ['oracle']" in capsys.readouterr().err


def test_no_factory_is_the_shipped_network():
    from runtime.model_adapter import ModelFactory

    assert isinstance(model_factory(config_from_dict({})), ModelFactory)


@pytest.fixture
def doc_model(tmp_path, monkeypatch):
    """The doc's minimal implementation, as the module constant_model it names (shipped to Ray workers by value)."""
    from ray import cloudpickle

    text = DOC.read_text()
    code = re.search(r'```python\n("""constant_model\.py.*?)```', text, re.S).group(1)
    (tmp_path / "constant_model.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("constant_model")
    cloudpickle.register_pickle_by_value(module)
    yield module
    cloudpickle.unregister_pickle_by_value(module)
    sys.modules.pop("constant_model", None)


def test_the_doc_example_runs_through_the_runtime_from_model_factory(ray_session, doc_model, tmp_path):
    from runtime.api import Runtime
    from runtime.model_protocol import missing_methods

    assert missing_methods(doc_model.ConstantModel()) == []
    cfg = small_config().model_copy(update={"model": config_from_dict(
        {"model": {"factory": "constant_model:ConstantModel"}}).model})
    sets = [make_frame_set(i, new_scene=(i in (0, 3)), sample_token=f"s{i}", missing=("CAM_BACK",) if i == 1 else ())
            for i in range(5)]
    with Runtime(cfg) as rt:
        assert rt.model_factory is doc_model.ConstantModel
        records = list(rt.iterate(ListSource(sets), out_dir=tmp_path / "run"))
    assert sorted(r.frame_id for r in records) == list(range(5)) and all(r.kind == "tick" for r in records)
    for r in sorted(records, key=lambda r: r.frame_id):
        d = r.detections_ego
        assert list(d.names) == ["car"] and d.boxes[0, 0] == 10.0 and d.scores[0] == pytest.approx(0.9)
        # the track id is the tick count of the scene: the state was stepped in order and reset at frame 3
        assert d.track_ids.tolist() == [r.frame_id + 1 if r.frame_id < 3 else r.frame_id - 2]
        assert r.seg.shape == (len(r.seg_channels), 0, 0)
    assert (tmp_path / "run" / "results_nusc.json").is_file() and (tmp_path / "run" / "results_tracking.json").is_file()
