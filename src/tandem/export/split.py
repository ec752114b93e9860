"""Cut a bundle's fp32 ONNX graph in two: a head that runs on the device, a tail that runs on the server.

A **candidate cut** is a point in the graph's compute order where exactly one activation crosses
from the part before to the part after (Neurosurgeon, Kang et al., ASPLOS 2017, cuts between
layers; inside a residual block the skip connection crosses too, so blocks are cut only at their
ends). Three kinds of tensors are told apart:

- **activations** depend on the values of the input pixels: they are what a cut sends;
- **constants** depend on no input (weights, ``Constant`` nodes): each side gets its own copy;
- **batch-size** tensors depend on the input only through ``Shape(x, start=0, end=1)`` — the batch
  size, which torch's exporter reads from the pixels for reshapes near the end. Axis 0 is the batch
  in every tensor of a bundle's graph, so the tail reads it from its own input instead of having
  it sent.

``k`` counts the compute nodes (nodes that produce an activation, in the file's order) that run
in the head; ``head_k.onnx`` takes ``pixels`` and returns the crossing tensor, ``tail_k.onnx``
takes that tensor (same name) and returns the model's outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import helper

from tandem import atomic
from tandem.bundle import Bundle, SplitSpec, TensorSpec, editing, write_manifest
from tandem.bundle.runtime import load_session
from tandem.errors import BundleError, ModelError

ACTIVATION, CONSTANT, BATCH = "activation", "constant", "batch"
# fp32 head → tail must reproduce the whole model this closely (the target).
PARITY_ATOL = 1e-4
_SPEC_DTYPES: dict[int, Literal["float32", "uint8", "int64"]] = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT64: "int64",
}


def head_file(k: int) -> str:
    return f"head_{k}.onnx"


def tail_file(k: int) -> str:
    return f"tail_{k}.onnx"


@dataclass(frozen=True)
class Cut:
    k: int  # compute nodes in the head
    tensor: str  # the one activation that crosses
    node: str  # the head's last compute node (name, or op type when unnamed)
    op: str


def _is_batch_shape(node: onnx.NodeProto) -> bool:
    if node.op_type != "Shape":
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return attrs.get("start", 0) == 0 and attrs.get("end") == 1


class GraphCuts:
    """The cut structure of one ONNX model: its compute nodes, candidate cuts, and head/tail models."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        g = model.graph
        self.nodes = list(g.node)
        self.initializers = {t.name: t for t in g.initializer}
        self.inputs = [i for i in g.input if i.name not in self.initializers]
        self.outputs = [o.name for o in g.output]
        self.producer: dict[str, int] = {}
        self.kind: dict[str, str] = {i.name: ACTIVATION for i in self.inputs}
        self.kind.update({name: CONSTANT for name in self.initializers})
        for idx, node in enumerate(self.nodes):
            kinds = set()
            for name in node.input:
                if not name:
                    continue  # an omitted optional input
                if name not in self.kind:
                    raise ModelError(f"ONNX node {node.name or node.op_type} reads {name!r} before any node writes it; "
                                     "the graph is not in topological order (re-export the bundle)")
                kinds.add(self.kind[name])
            if _is_batch_shape(node):
                out_kind = BATCH if kinds & {ACTIVATION, BATCH} else CONSTANT
            elif ACTIVATION in kinds:
                out_kind = ACTIVATION
            elif BATCH in kinds:
                out_kind = BATCH
            else:
                out_kind = CONSTANT
            for name in node.output:
                if name:
                    self.kind[name] = out_kind
                    self.producer[name] = idx
        self.compute = [i for i, n in enumerate(self.nodes) if any(self.kind.get(o) == ACTIVATION for o in n.output)]
        self._value_info = {v.name: v for v in (*g.value_info, *g.input, *g.output)}
        self._cuts: list[Cut] | None = None

    # --- candidate cuts ------------------------------------------------------------------------
    def cuts(self) -> list[Cut]:
        """Every k (1 ≤ k < compute nodes) where exactly one activation, not a model output, crosses."""
        if self._cuts is None:
            self._cuts = self._find_cuts()
        return list(self._cuts)

    def _find_cuts(self) -> list[Cut]:
        n = len(self.compute)
        defined: dict[str, int] = {i.name: -1 for i in self.inputs}  # the compute position that writes it
        last_use: dict[str, int] = {}  # the last compute position that reads it
        for pos, node_idx in enumerate(self.compute):
            node = self.nodes[node_idx]
            for name in node.input:
                if self.kind.get(name) == ACTIVATION:
                    last_use[name] = max(last_use.get(name, -1), pos)
            for name in node.output:
                if self.kind.get(name) == ACTIVATION:
                    defined[name] = pos
        for name in self.outputs:
            last_use[name] = n  # needed after the last node
        crossing_at: list[list[str]] = [[] for _ in range(n + 1)]
        for name, d in defined.items():
            for k in range(d + 1, last_use.get(name, -1) + 1):
                crossing_at[k].append(name)
        found = []
        for k in range(1, n):
            crossing = crossing_at[k]
            if (len(crossing) != 1 or crossing[0] in self.outputs or self._elem_type(crossing[0]) not in _SPEC_DTYPES
                    or not self._batch_first(crossing[0])):
                continue
            node = self.nodes[self.compute[k - 1]]
            found.append(Cut(k=k, tensor=crossing[0], node=node.name or node.op_type, op=node.op_type))
        return found

    def activations(self) -> list[str]:
        """Every activation tensor: the graph's input(s) and what the compute nodes write."""
        names = [i.name for i in self.inputs]
        for idx in self.compute:
            names.extend(o for o in self.nodes[idx].output if self.kind.get(o) == ACTIVATION)
        return names

    def live_bytes(self, nbytes: dict[str, int]) -> list[int]:
        """Bytes of activations alive while each compute node runs (its inputs and outputs included),
        given each activation's size; tensors missing from ``nbytes`` count 0."""
        n = len(self.compute)
        span: dict[str, list[int]] = {i.name: [0, 0] for i in self.inputs}
        for pos, idx in enumerate(self.compute):
            node = self.nodes[idx]
            for name in node.output:
                if self.kind.get(name) == ACTIVATION:
                    span[name] = [pos, pos]
            for name in node.input:
                if name in span:
                    span[name][1] = max(span[name][1], pos)
        for name in self.outputs:
            if name in span:
                span[name][1] = n - 1
        live = [0] * n
        for name, (first, last) in span.items():
            for pos in range(first, last + 1):
                live[pos] += nbytes.get(name, 0)
        return live

    def cut(self, k: int) -> Cut:
        for c in self.cuts():
            if c.k == k:
                return c
        raise BundleError(f"k={k} is not a candidate cut of this model (one activation crossing); "
                          f"candidates: {_ranges([c.k for c in self.cuts()])}")

    # --- the two parts ---------------------------------------------------------------------------
    def head(self, k: int) -> onnx.ModelProto:
        cut = self.cut(k)
        nodes = self._closure([cut.tensor], stop=set(), reroute_batch=False)
        return self._model(f"head_{k}", nodes, list(self.inputs), [self._tensor_info(cut.tensor)])

    def tail(self, k: int) -> onnx.ModelProto:
        cut = self.cut(k)
        nodes = self._closure(self.outputs, stop={cut.tensor}, reroute_batch=True)
        made = {o for n in nodes for o in n.output} | {cut.tensor}
        rerouted = []
        for node in nodes:
            if _is_batch_shape(node) and node.input[0] not in made:
                # The batch size, read from the tail's own input: axis 0 is the batch everywhere.
                copy = onnx.NodeProto()
                copy.CopyFrom(node)
                copy.input[0] = cut.tensor
                rerouted.append(copy)
            else:
                rerouted.append(node)
        outputs = [o for o in self.model.graph.output]
        return self._model(f"tail_{k}", rerouted, [self._tensor_info(cut.tensor)], outputs)

    def tensor_spec(self, k: int) -> TensorSpec:
        cut = self.cut(k)
        info = self._tensor_info(cut.tensor)
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in info.type.tensor_type.shape.dim]
        return TensorSpec(name=cut.tensor, dtype=_SPEC_DTYPES[info.type.tensor_type.elem_type],
                          shape=[-1, *dims[1:]])

    def _closure(self, targets: Iterable[str], stop: set[str], reroute_batch: bool) -> list[onnx.NodeProto]:
        """The nodes needed to compute ``targets`` from ``stop`` (and the graph inputs), in file order."""
        needed: set[int] = set()
        todo = [t for t in targets if t not in stop]
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen or name in stop:
                continue
            seen.add(name)
            idx = self.producer.get(name)
            if idx is None or idx in needed:
                continue
            needed.add(idx)
            node = self.nodes[idx]
            if reroute_batch and _is_batch_shape(node):
                continue  # its input may be rerouted to the tail's own input (see tail())
            todo.extend(i for i in node.input if i)
        return [self.nodes[i] for i in sorted(needed)]

    def _batch_first(self, name: str) -> bool:
        """Whether axis 0 of ``name`` is known to be the input's batch axis (a flattened [N·C] is not)."""
        info = self._value_info.get(name)
        if info is None or not self.inputs:
            return False
        dims, batch = info.type.tensor_type.shape.dim, self.inputs[0].type.tensor_type.shape.dim
        if len(dims) < 2 or not batch:
            return False
        a, b = dims[0], batch[0]
        if b.HasField("dim_param"):
            return a.HasField("dim_param") and a.dim_param == b.dim_param
        return a.HasField("dim_value") and a.dim_value == b.dim_value

    def _elem_type(self, name: str) -> int | None:
        info = self._value_info.get(name)
        return info.type.tensor_type.elem_type if info is not None and info.type.HasField("tensor_type") else None

    def _tensor_info(self, name: str) -> onnx.ValueInfoProto:
        info = self._value_info.get(name)
        if info is None or not info.type.tensor_type.HasField("shape"):
            raise ModelError(f"no shape is known for tensor {name!r}; run onnx.shape_inference on the model first")
        out = onnx.ValueInfoProto()
        out.CopyFrom(info)
        dims = out.type.tensor_type.shape.dim
        if dims:
            # A dynamic batch axis, whatever the exporter called it.
            dims[0].Clear()
            dims[0].dim_param = "batch"
        return out

    def _model(self, name: str, nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
               outputs: Sequence[onnx.ValueInfoProto]) -> onnx.ModelProto:
        used = {i for n in nodes for i in n.input if i}
        inits = [t for n, t in self.initializers.items() if n in used]
        inside = (used | {o for n in nodes for o in n.output}) - {v.name for v in (*inputs, *outputs)}
        value_info = [v for v in self.model.graph.value_info if v.name in inside]
        graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), inits, value_info=value_info)
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version,
                                  functions=list(self.model.functions))
        model.producer_name = "tandem.export.split"
        onnx.checker.check_model(model)
        return model


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every intermediate tensor's type and shape, which the cuts need."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as e:  # onnx raises several unexported error types
        raise ModelError(f"ONNX shape inference failed on the model ({e}); re-export the bundle") from e


def load_cuts(path: Path) -> GraphCuts:
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ModelError(f"{path}: not a readable ONNX model ({e}); re-export the bundle") from e
    return GraphCuts(with_shapes(model))


def _ranges(ks: Sequence[int]) -> str:
    if not ks:
        return "none"
    parts, start, prev = [], ks[0], ks[0]
    for k in [*ks[1:], None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if k is not None:
            start = prev = k
    return ", ".join(parts)


def run_split(head: bytes | Path, tail: bytes | Path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of head → tail on ``pixels``, as the device and the server would compute them."""
    h, t = load_session(head), load_session(tail)
    (mid,) = h.run(None, {h.get_inputs()[0].name: pixels})
    outs = t.run(None, {t.get_inputs()[0].name: mid})
    return {o.name: v for o, v in zip(t.get_outputs(), outs, strict=True)}


def check_parity(whole: Path, head: bytes, tail: bytes, pixels: np.ndarray, atol: float = PARITY_ATOL) -> float:
    """max |Δ| between the whole model and head → tail over every output; raises past ``atol``."""
    sess = load_session(whole)
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: pixels}),
                   strict=True))
    got = run_split(head, tail, pixels)
    worst = max(float(np.abs(ref[n].astype(np.float64) - got[n]).max()) for n in ref)
    if not worst <= atol:  # also catches NaN
        raise ModelError(f"the split model differs from the whole model by {worst:.3g} (limit {atol:g}); "
                         "this cut is not safe for this graph")
    return worst


def split_bundle(path: Path | str, ks: Sequence[int], sample: np.ndarray | None = None) -> Bundle:
    """Write ``head_k.onnx`` / ``tail_k.onnx`` for each k into the bundle at ``path`` and record them
    in the manifest's ``splits``; each split is checked against the whole model on ``sample``
    pixels (random pixels when None) before anything is replaced."""
    bundle = Bundle.load(path)
    if not ks:
        raise BundleError("name at least one k to split at; `tandem advise BUNDLE` lists the candidates")
    whole = bundle.model_path("fp32")
    cuts = load_cuts(whole)
    for k in ks:
        cuts.cut(k)  # refuse a bad k before writing anything
    m = bundle.manifest
    if sample is None:
        h, w = m.preprocessing.height, m.preprocessing.width
        sample = np.random.default_rng(0).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    specs = {s.k: s for s in m.splits}
    with editing(bundle) as stage:
        for k in ks:
            head, tail = cuts.head(k).SerializeToString(), cuts.tail(k).SerializeToString()
            check_parity(whole, head, tail, sample)
            atomic.write_bytes(stage / head_file(k), head)
            atomic.write_bytes(stage / tail_file(k), tail)
            specs[k] = SplitSpec(k=k, head=head_file(k), tail=tail_file(k), tensor=cuts.tensor_spec(k))
        write_manifest(stage, m.model_copy(update={"splits": [specs[k] for k in sorted(specs)]}))
        Bundle.load(stage)
    return Bundle.load(path)
