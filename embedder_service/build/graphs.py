"""What every ONNX graph the build writes shares: its opset and IR version, and how a checked
model is made from a writer's nodes and initializers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx
from onnx import helper

OPSET = 17
# IR 8 is what opset 17 was released with; older onnxruntime builds refuse newer IR versions.
IR_VERSION = 8


def checked_model(
    name: str,
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto],
    doc: str,
    properties: Mapping[str, str],
) -> onnx.ModelProto:
    """A model of one graph, with its provenance in ``properties``, passed by ``onnx.checker``."""
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="facesearch",
        doc_string=doc,
    )
    helper.set_model_props(model, dict(properties))
    onnx.checker.check_model(model, full_check=True)
    return model
