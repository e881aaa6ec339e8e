"""fxc.load on hostile or malformed folders: each case raises FormatError, writes no file and runs
no code from the file.

Every case starts from a real saved model (a quantized MLP), edits its manifest (or weights) the
way an attacker would, recomputes the manifest checksum (anyone can: it is not a signature), then
loads it with builtins.exec / eval / open / __import__ and os.system watched: no call may carry the
payload's canary, the canary file must not appear, and the folder tree must be unchanged.
"""

from __future__ import annotations

import builtins
import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import mlp

import fxc
from fxc.api.manifest import MANIFEST, WEIGHTS, body_sha256

CANARY = "FXC_CANARY_7f3a"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    model, (x,) = mlp()
    compiled = fxc.compile(model, "quantize{bits=8}", example_inputs=(x,))
    return fxc.save(compiled, tmp_path_factory.mktemp("template") / "model")


def nodes(m):
    return m["graph"]["nodes"]


def first_call(m):
    return next(n for n in nodes(m) if n["op"] == "call_function")


def node_named(m, name):
    return next(n for n in nodes(m) if n["name"] == name)


def add_call(m, target, args, kwargs=(), name="evil"):
    """A new call node just before the output, its result unused (the loader must still refuse it)."""
    entry = {"name": name, "op": "call_function", "target": target, "args": {"tuple": args},
             "kwargs": {"dict": [list(kv) for kv in kwargs]}}
    nodes(m).insert(len(nodes(m)) - 1, entry)


def nest(depth):
    value = 1
    for _ in range(depth):
        value = {"list": [value]}
    return value


def set_spec(m, which, text):
    m["graph"]["pytree"][which] = text


def canary_path(tmp_path):
    return str(tmp_path / CANARY)


def payload(tmp_path):
    return f"open({canary_path(tmp_path)!r}, 'w').write('{CANARY}')"


# each case: (id, edit(manifest, tmp_path)); the edit mutates the manifest in place
CASES = [
    ("exec-node", lambda m, t: add_call(m, "builtins.exec", [payload(t)])),
    ("eval-node", lambda m, t: add_call(m, "builtins.eval", [payload(t)])),
    ("import-chain", lambda m, t: (
        add_call(m, "builtins.__import__", ["os"], name="mod"),
        add_call(m, "builtins.getattr", [{"node": "mod"}, "system"], name="fn"),
        add_call(m, "operator.call", [{"node": "fn"}, f"touch {t / CANARY}"], name="run"))),
    ("open-node", lambda m, t: add_call(m, "builtins.open", [canary_path(t), "w"])),
    ("torch-load", lambda m, t: add_call(m, "torch.load", [canary_path(t)])),
    ("torch-save", lambda m, t: add_call(m, "torch.save", [1, canary_path(t)])),
    ("os-system", lambda m, t: add_call(m, "os.system", [f"touch {t / CANARY}"])),
    ("subprocess", lambda m, t: add_call(m, "subprocess.run", [{"list": ["touch", canary_path(t)]}])),
    ("aten-from-file", lambda m, t: add_call(m, "torch.ops.aten.from_file.default", [canary_path(t)])),
    ("math-factorial", lambda m, t: add_call(m, "math.factorial", [10**7])),
    ("operator-mul-string", lambda m, t: add_call(m, "operator.mul", ["a", 10**10])),
    ("operator-pow-huge", lambda m, t: add_call(m, "operator.pow", [2, 10**9])),
    ("operator-kwargs", lambda m, t: add_call(m, "operator.add", [1], kwargs=[("b", 2)])),
    ("zeros-4tb", lambda m, t: add_call(m, "torch.ops.aten.zeros.default", [{"list": [10**6, 10**6]}])),
    ("full-4tb", lambda m, t: add_call(m, "torch.ops.aten.full.default", [{"list": [10**6, 10**6]}, 1.0])),
    ("arange-huge", lambda m, t: add_call(m, "torch.ops.aten.arange.default", [10**12])),
    ("repeat-huge", lambda m, t: add_call(m, "torch.ops.aten.repeat.default", [{"node": "x"},
                                                                              {"list": [10**5, 10**5]}])),
    ("int-beyond-int64", lambda m, t: add_call(m, "torch.ops.aten.add.Tensor", [{"node": "x"}, 10**30])),
    ("string-for-tensor", lambda m, t: add_call(m, "torch.ops.aten.add.Tensor", [{"node": "x"}, payload(t)])),
    ("too-many-args", lambda m, t: add_call(m, "torch.ops.aten.gelu.default", [{"node": "x"}, "none", 1, 2])),
    ("unknown-kwarg", lambda m, t: add_call(m, "torch.ops.aten.gelu.default", [{"node": "x"}],
                                            kwargs=[("code", payload(t))])),
    ("missing-arg", lambda m, t: add_call(m, "torch.ops.aten.add.Tensor", [{"node": "x"}])),
    ("fxc-op-wrong-args", lambda m, t: first_call(m)["args"]["tuple"].append(payload(t))),
    ("huge-string-arg", lambda m, t: add_call(m, "torch.ops.aten.div.Tensor_mode",
                                              [{"node": "x"}, 2.0], kwargs=[("rounding_mode", "a" * 100_000)])),
    ("getattr-quote-injection", lambda m, t: node_named(m, "layers_0_qweight").update(
        target='layers.0.qweight"); ' + payload(t) + '; ("')),
    ("getattr-dunder", lambda m, t: node_named(m, "layers_0_qweight").update(target="__class__.__init__")),
    ("getattr-shadows-forward", lambda m, t: node_named(m, "layers_0_qweight").update(target="forward")),
    ("node-name-injection", lambda m, t: node_named(m, "gelu").update(name="gelu = " + payload(t) + "; x")),
    ("placeholder-name-injection", lambda m, t: node_named(m, "x").update(target="x=" + payload(t))),
    ("orig-args-injection", lambda m, t: m["graph"]["pytree"].update(
        orig_args=[f"x):\n    {payload(t)}\ndef _f(y"])),
    ("orig-args-self", lambda m, t: m["graph"]["pytree"].update(orig_args=["self"])),
    ("spec-enum-import", lambda m, t: set_spec(m, "in_spec", json.dumps([1, {
        "type": "builtins.dict", "context": json.dumps({"__enum__": True, "fqn": "os:system", "name": "x"}),
        "children_spec": []}]))),
    ("spec-foreign-type", lambda m, t: set_spec(m, "out_spec", json.dumps([1, {
        "type": "subprocess.Popen", "context": "null", "children_spec": []}]))),
    ("spec-transformers-non-output", lambda m, t: set_spec(m, "out_spec", json.dumps([1, {
        "type": "transformers.models.llama.modeling_llama.LlamaModel", "context": "[]", "children_spec": []}]))),
    ("spec-not-json", lambda m, t: set_spec(m, "in_spec", "__import__('os')")),
    ("spec-deep", lambda m, t: set_spec(m, "out_spec", "[1, " + '{"type": "builtins.list", "context": "null", '
                                        '"children_spec": [' * 5000 + "]}" * 5000 + "]")),
    ("stack-trace-carriage-return", lambda m, t: first_call(m).update(
        stack_trace=f'File "a.py", line 1, in f\r{payload(t)}\n    x')),
    ("dtype-names-function", lambda m, t: node_named(m, "x")["val"].update(dtype="load")),
    ("dtype-arg-names-function", lambda m, t: add_call(m, "torch.ops.aten._to_copy.default", [{"node": "x"}],
                                                       kwargs=[("dtype", {"dtype": "load"})])),
    ("layout-names-function", lambda m, t: add_call(m, "torch.ops.aten._to_copy.default", [{"node": "x"}],
                                                    kwargs=[("layout", {"layout": "load"})])),
    ("device-garbage", lambda m, t: add_call(m, "torch.ops.aten._to_copy.default", [{"node": "x"}],
                                             kwargs=[("device", {"device": "cuda; " + payload(t)})])),
    ("unknown-encoding", lambda m, t: add_call(m, "torch.ops.aten.add.Tensor", [{"node": "x"},
                                                                                {"eval": payload(t)}])),
    ("forward-reference", lambda m, t: first_call(m)["args"]["tuple"].__setitem__(0, {"node": "gelu_1"})),
    ("undefined-node", lambda m, t: first_call(m)["args"]["tuple"].__setitem__(0, {"node": "nope"})),
    ("duplicate-name", lambda m, t: node_named(m, "gelu_1").update(name="gelu")),
    ("call-module", lambda m, t: first_call(m).update(op="call_module", target="layers")),
    ("call-method", lambda m, t: first_call(m).update(op="call_method", target="__reduce__")),
    ("output-not-last", lambda m, t: nodes(m).insert(0, copy.deepcopy(nodes(m)[-1]))),
    ("no-output", lambda m, t: nodes(m).pop()),
    ("deep-args", lambda m, t: add_call(m, "torch.ops.aten.add.Tensor", [{"node": "x"}, nest(200)])),
    ("placeholder-hint-huge", lambda m, t: node_named(m, "x")["val"]["shape"].__setitem__(
        0, {"symbol": "s0", "hint": 10**12})),
    ("placeholder-no-val", lambda m, t: node_named(m, "x").pop("val")),
    ("annotation-unknown-key", lambda m, t: first_call(m).update(fxc={"fxc.evil": {"code": payload(t)}})),
    ("annotation-wrong-type", lambda m, t: first_call(m)["fxc"]["fxc.quant"].update(bits=payload(t))),
    ("annotation-extra-field", lambda m, t: first_call(m)["fxc"]["fxc.quant"].update(__class__="x")),
    ("graph-missing", lambda m, t: m.pop("graph")),
    ("nodes-not-list", lambda m, t: m["graph"].update(nodes={"a": 1})),
    ("node-not-dict", lambda m, t: nodes(m).insert(0, "import os")),
    ("node-unknown-field", lambda m, t: first_call(m).update(code=payload(t))),
    ("version-as-string", lambda m, t: m.update(format_version="1")),
    ("version-missing", lambda m, t: m.pop("format_version")),
    ("version-bool", lambda m, t: m.update(format_version=True)),
    ("tensor-name-dunder", lambda m, t: m["tensors"].update({"__class__": {"key": "layers.0.bias",
                                                                            "kind": "buffer"}})),
    ("tensor-kind-unknown", lambda m, t: next(iter(m["tensors"].values())).update(kind="module")),
    ("tensor-shape-mismatch", lambda m, t: next(iter(m["tensors"].values())).update(shape=[3, 3])),
    ("tensor-dtype-mismatch", lambda m, t: next(iter(m["tensors"].values())).update(dtype="float16")),
    ("tensor-key-missing", lambda m, t: next(iter(m["tensors"].values())).update(key="nope")),
    ("weights-sha-not-hex", lambda m, t: m["weights"].update(sha256="../../etc/passwd")),
    ("drift-not-number", lambda m, t: m.update(drift={"a": payload(t)})),
    ("backend-path", lambda m, t: m.update(backend="../../" + CANARY)),
    ("pipeline-not-string", lambda m, t: m.update(pipeline={"code": payload(t)})),
    ("symbol-name-garbage", lambda m, t: node_named(m, "x")["val"]["shape"].__setitem__(
        0, {"symbol": "s0\n" + payload(t), "hint": 2})),
]


def write_manifest(folder: Path, manifest: dict, text: str | None = None) -> None:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    try:
        manifest = {**body, "manifest_sha256": body_sha256(body)}  # the attacker recomputes the checksum
    except (ValueError, RecursionError, TypeError):
        pass
    (folder / MANIFEST).write_text(text if text is not None else json.dumps(manifest))


class Watch:
    """Records calls of exec/eval/open/__import__/os.system during a load; forwards them."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for name in ("exec", "eval", "open", "__import__", "compile"):
            real = getattr(builtins, name)
            monkeypatch.setattr(builtins, name, self._wrap(name, real))
        monkeypatch.setattr(os, "system", self._wrap("os.system", lambda *a, **k: 0))

    def _wrap(self, name, real):
        def watched(*args, **kwargs):
            self.calls.append(f"{name}{args!r:.2000}{kwargs!r:.200}")
            return real(*args, **kwargs)

        return watched

    def suspicious(self) -> list[str]:
        return [c for c in self.calls if CANARY in c or c.startswith("os.system")]


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def check_refused(folder: Path, tmp_path: Path, monkeypatch, load=fxc.load) -> fxc.FormatError:
    before = tree(tmp_path)
    watch = Watch(monkeypatch)
    with pytest.raises(fxc.FormatError) as caught:
        load(folder)
    monkeypatch.undo()
    assert not watch.suspicious(), watch.suspicious()
    assert not (tmp_path / CANARY).exists()
    assert tree(tmp_path) == before  # nothing written, nothing removed
    assert "Traceback" not in str(caught.value)
    return caught.value


def test_corpus_is_large_enough():
    assert len(CASES) >= 40 and len({name for name, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("name,edit", CASES, ids=[name for name, _ in CASES])
def test_hostile_manifest_refused(template, tmp_path, monkeypatch, name, edit):
    folder = tmp_path / "model"
    shutil.copytree(template, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    edit(manifest, tmp_path)
    write_manifest(folder, manifest)
    error = check_refused(folder, tmp_path, monkeypatch)
    assert len(str(error)) < 2000


def test_the_unedited_template_loads(template, tmp_path, monkeypatch):
    """The corpus's refusals come from the edits: the same folder, unedited and re-written, loads."""
    folder = tmp_path / "model"
    shutil.copytree(template, folder)
    write_manifest(folder, json.loads((folder / MANIFEST).read_text()))
    watch = Watch(monkeypatch)
    fxc.load(folder)
    monkeypatch.undo()
    assert not watch.suspicious()


@pytest.mark.parametrize("text", [
    '{"format": "fxc-compiled-model", "format_version": NaN}',
    '{"format": "fxc-compiled-model", "format_version": 1, "x": Infinity}',
    "[" * 100_000 + "]" * 100_000,
    "\xff\xfe not utf-8",
    "",
    "[]",
    '"fxc-compiled-model"',
])
def test_malformed_json_refused(template, tmp_path, monkeypatch, text):
    folder = tmp_path / "model"
    shutil.copytree(template, folder)
    (folder / MANIFEST).write_bytes(text.encode("latin-1"))
    check_refused(folder, tmp_path, monkeypatch)


def test_nan_constant_in_the_graph_refused(template, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(template, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    add_call(manifest, "torch.ops.aten.add.Tensor", [{"node": "x"}, 1.5])
    text = json.dumps(manifest).replace("1.5", "NaN")
    write_manifest(folder, manifest, text)
    check_refused(folder, tmp_path, monkeypatch)


def test_extra_tensor_in_the_weights_refused(template, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(template, folder)
    tensors = load_file(str(folder / WEIGHTS))
    tensors["smuggled"] = torch.zeros(4)
    save_file(tensors, str(folder / WEIGHTS))
    manifest = json.loads((folder / MANIFEST).read_text())
    data = (folder / WEIGHTS).read_bytes()
    import hashlib

    manifest["weights"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_manifest(folder, manifest)
    error = check_refused(folder, tmp_path, monkeypatch)
    assert "smuggled" in str(error)


def test_report_command_refuses_too(template, tmp_path, monkeypatch, capsys):
    """`fxc report` reads a saved folder through the same checks: one clear line, exit code 2."""
    from fxc.cli.main import main

    folder = tmp_path / "model"
    shutil.copytree(template, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    add_call(manifest, "builtins.exec", [payload(tmp_path)])
    write_manifest(folder, manifest)

    def run_report(path):
        try:
            code = main(["report", str(path)])
        except SystemExit as exit_:
            code = exit_.code
        if code == 2:
            raise fxc.FormatError("reported")

    check_refused(folder, tmp_path, monkeypatch, load=run_report)
    assert "not in fxc's op set" in capsys.readouterr().err
