"""The closed op set fxc.load accepts is exactly what the reference numpy backend lowers, and
fxc.save refuses a graph that leaves it (so what save writes, load reads)."""

import pytest
import torch
from tiny_models import mlp

import fxc
from fxc.codegen.numpy.lowering import op_table
from fxc.ir import op_set, ops


def test_aten_set_equals_the_numpy_backend_table():
    lowered = {f"{k._opname}.{k._overloadname}" for k in op_table() if isinstance(k, torch._ops.OpOverload)
               and k.namespace == "aten"}
    assert lowered == set(op_set.ATEN)


def test_python_functions_equal_the_numpy_backend_table():
    lowered = {k for k in op_table() if not isinstance(k, torch._ops.OpOverload)}
    assert lowered == {function for function, _ in op_set.PYTHON_FUNCTIONS.values()}


def test_every_fxc_op_is_in_the_set_and_resolves():
    for op in ops.OPS:
        assert op_set.resolve(op_set.op_name(op)) is op


def test_names_outside_the_set_resolve_to_nothing():
    for name in ("builtins.exec", "torch.load", "torch.ops.aten.from_file.default", "os.system",
                 "torch.ops.aten.add", "torch.ops.aten.add.Tensor.x", "math.factorial"):
        assert op_set.resolve(name) is None


def test_save_refuses_a_graph_outside_the_op_set(tmp_path):
    model, (x,) = mlp()
    compiled = fxc.compile(model, None, example_inputs=(x,))
    node = next(n for n in compiled.graph.graph.nodes if n.op == "call_function")
    node.target = torch.ops.aten.erfinv.default
    with pytest.raises(fxc.FormatError, match="aten.erfinv.default, which is outside the op set"):
        fxc.save(compiled, tmp_path / "model")
    assert not (tmp_path / "model").exists()
