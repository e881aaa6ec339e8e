"""Hypothesis fuzzing of the saved manifest: whatever the JSON says, fxc.load either loads a model
or raises an FxcError subclass (FormatError, or the registry's / option checker's error for a
backend name or option), never a raw Python error, and writes no file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import mlp

import fxc
from fxc.api.manifest import MANIFEST, body_sha256

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
    | st.sampled_from(["torch.ops.aten.add.Tensor", "builtins.exec", "x", "node", "tuple", "float", "nan",
                       "layers.0.bias", "float32", "__class__", "parameter"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["node", "tuple", "list", "dict", "float", "dtype", "device", "slice", "name", "op",
                         "target", "args", "kwargs", "type", "context", "children_spec", "symbol", "hint"])
        | st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, (x,) = mlp()
    compiled = fxc.compile(model, "quantize{bits=8,act-bits=8}", example_inputs=(x,))
    folder = fxc.save(compiled, tmp_path_factory.mktemp("fuzz") / "model")
    return folder, json.loads((folder / MANIFEST).read_text())


def paths(value, prefix=()):
    """Every path (tuple of keys / indices) into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def replaced(value, path, new):
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def load_only_fxc_errors(folder: Path, text: str, tmp: Path) -> None:
    target = tmp / "model"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder, target)
    (target / MANIFEST).write_text(text)
    try:
        fxc.load(target)
    except fxc.FxcError:
        pass
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "report.txt", "weights.safetensors"]


def with_checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return json.dumps({**body, "manifest_sha256": body_sha256(body)})


@FUZZ
@given(data=st.data(), new=json_values)
def test_one_field_replaced(saved, tmp_path, data, new):
    folder, manifest = saved
    all_paths = [p for p in paths(manifest) if p and p[0] != "manifest_sha256"]
    path = data.draw(st.sampled_from(all_paths))
    load_only_fxc_errors(folder, with_checksum(replaced(manifest, path, new)), tmp_path)


@FUZZ
@given(data=st.data())
def test_node_fields_shuffled(saved, tmp_path, data):
    """Nodes keep their shape but take each other's names, targets and arguments."""
    folder, manifest = saved
    nodes = manifest["graph"]["nodes"]
    field = data.draw(st.sampled_from(["name", "op", "target", "args", "kwargs", "val", "fxc"]))
    i, j = data.draw(st.integers(0, len(nodes) - 1)), data.draw(st.integers(0, len(nodes) - 1))
    edited = [dict(n) for n in nodes]
    if field in nodes[j]:
        edited[i][field] = nodes[j][field]
    else:
        edited[i].pop(field, None)
    graph = {**manifest["graph"], "nodes": edited}
    load_only_fxc_errors(folder, with_checksum({**manifest, "graph": graph}), tmp_path)


@FUZZ
@given(text=st.text(max_size=200) | json_values.map(json.dumps))
def test_arbitrary_text(saved, tmp_path, text):
    folder, _ = saved
    load_only_fxc_errors(folder, text, tmp_path)
