"""A model's input/output structure (a torch pytree TreeSpec) as checked data, never as code.

    text = dumps(spec)         # torch's JSON treespec text (protocol 1), as the manifest stores it
    spec = loads(text, where)  # the TreeSpec, built here from checked pieces

torch's own `treespec_loads` may import any module a file names (its enum hook); this reader never
does. Each tree node's type must be a leaf, tuple, list, dict or OrderedDict, or a Hugging Face
output class (a `ModelOutput` subclass of `transformers.modeling_outputs` or of a model's own
`transformers.models.<name>.modeling_<name>` module, which is imported, as loading that model would);
its context must be null (tuples, lists) or a JSON list of str/int keys whose length matches its
children; nesting is bounded. Anything else raises FormatError naming the field.
Reads and writes nothing.
"""

from __future__ import annotations

import collections
import importlib
import json
import re
from typing import Any

import torch.utils._pytree as pytree

from fxc.ir.graph_schema import fail

MAX_DEPTH = 64
MAX_CHILDREN = 1 << 16
_CONTAINERS = {
    "builtins.tuple": tuple,
    "builtins.list": list,
    "builtins.dict": dict,
    "collections.OrderedDict": collections.OrderedDict,
}
_HF_MODULE = re.compile(r"transformers\.(modeling_outputs|models\.[a-z0-9_]+\.modeling_[a-z0-9_]+)")


def dumps(spec: Any) -> str | None:
    return None if spec is None else pytree.treespec_dumps(spec)


def loads(text: Any, where: str) -> Any:
    """The TreeSpec `text` describes (None for null), checked; FormatError otherwise."""
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > 1 << 24:
        raise fail(where, "the structure is not a treespec text")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise fail(where, "the structure is not valid JSON") from None
    if not (isinstance(data, list) and len(data) == 2 and data[0] == 1):
        raise fail(where, "the structure is not a protocol-1 treespec ([1, {...}])")
    return _node(data[1], where, 0)


def _node(data: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise fail(where, f"the structure nests deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict) or set(data) != {"type", "context", "children_spec"}:
        raise fail(where, "a tree node is not {type, context, children_spec}")
    kind, context, children = data["type"], data["context"], data["children_spec"]
    if not isinstance(children, list) or len(children) > MAX_CHILDREN:
        raise fail(where, "a tree node's children_spec is not a list")
    if kind is None:
        if context is not None or children:
            raise fail(where, "a leaf has a context or children")
        return pytree.treespec_leaf()
    typ = _type(kind, where)
    specs = [_node(child, where, depth + 1) for child in children]
    if typ in (tuple, list):
        if context != "null":
            raise fail(where, f"a {typ.__name__} node has a context")
        return pytree.TreeSpec(typ, None, specs)
    keys = _keys(context, where)
    if len(keys) != len(specs):
        raise fail(where, f"a {kind} node has {len(keys)} keys and {len(specs)} children")
    return pytree.TreeSpec(typ, keys, specs)


def _keys(context: Any, where: str) -> list:
    try:
        keys = json.loads(context) if isinstance(context, str) and len(context) < 1 << 20 else None
    except ValueError:
        keys = None
    if not isinstance(keys, list) or not all(type(k) in (str, int) for k in keys) or len(set(keys)) != len(keys):
        raise fail(where, "a mapping node's context is not a JSON list of distinct str/int keys")
    return keys


def _type(name: Any, where: str) -> type:
    if not isinstance(name, str):
        raise fail(where, f"tree node type {name!r} is not a name")
    if name in _CONTAINERS:
        return _CONTAINERS[name]
    module, _, cls_name = name.rpartition(".")
    if not _HF_MODULE.fullmatch(module) or not cls_name.isidentifier():
        raise fail(where, f"tree node type {name!r} is not a container fxc accepts (tuple, list, dict, a Hugging "
                          "Face ModelOutput)")
    try:
        from transformers.utils import ModelOutput
    except ImportError:
        raise fail(where, f"the outputs are {name}, a transformers class", "pip install transformers") from None
    try:
        cls = getattr(importlib.import_module(module), cls_name, None)
    except ImportError:
        raise fail(where, f"{module} is not part of the installed transformers", "upgrade transformers") from None
    if not (isinstance(cls, type) and issubclass(cls, ModelOutput) and cls in pytree.SUPPORTED_NODES):
        raise fail(where, f"{name} is not a Hugging Face ModelOutput class")
    return cls
