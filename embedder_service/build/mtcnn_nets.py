"""Build MTCNN's P-, R- and O-Net as ONNX graphs from the weights facenet-pytorch ships.

The ``.pt`` files are read with :mod:`embedder_service.build.torch_pickle` (no torch) and
each layer is written with ``onnx.helper``, mirroring facenet-pytorch's modules exactly.

Every graph has one input, ``input``: float32, NCHW, RGB, already normalised as
``(pixel - 127.5) * 0.0078125``. Outputs, in this order (the order of facenet-pytorch's
``forward``, so index-based code ported from it keeps working):

=========== ============== ===================================================
net         input shape    outputs
=========== ============== ===================================================
pnet        (N, 3, H, W)   ``reg`` (N, 4, h, w) box offsets; ``prob`` (N, 2,
                           h, w) softmax, channel 1 = face.
                           h = ceil((H - 2) / 2) - 4, same for w
pnet_packed (N, 4, H, W)   as pnet; channel 3 is a mask: 0 where a conv1
                           output (top-left pixel of its 3x3 window) belongs
                           to a pyramid level, a large negative number elsewhere
rnet        (N, 3, 24, 24) ``reg`` (N, 4); ``prob`` (N, 2)
onet        (N, 3, 48, 48) ``reg`` (N, 4); ``landmarks`` (N, 10): five x then
                           five y, relative to the box; ``prob`` (N, 2)
=========== ============== ===================================================

``pnet_packed`` runs several pyramid levels packed into one fixed-size canvas (see
``models/detector.py``): the mask is added to conv1's activations before the ceil-mode pool,
so a partial pool window at a level's edge never sees another level's or the canvas's pixels,
and each level's output cells equal P-Net's on the level alone.

R- and O-Net flatten their last feature map as (N, W, H, C), not NCHW: the weights were
converted from Caffe that way, so a Transpose precedes the Flatten.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from embedder_service.build.graphs import checked_model
from embedder_service.build.torch_pickle import load_state_dict

SOURCE_PACKAGE = "facenet-pytorch"
NET_NAMES = ("pnet", "rnet", "onet")
PACKED_PNET = "pnet_packed"
WEIGHTS_OF = {PACKED_PNET: "pnet"}  # graphs named otherwise than their weights file


def locate_mtcnn_weights() -> Path:
    """The ``facenet_pytorch/data`` folder holding ``pnet.pt``, ``rnet.pt``, ``onet.pt``.

    Found through the import system without importing facenet_pytorch: its ``__init__``
    imports torch, which is not installed (the package is installed with ``--no-deps``).
    """
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "facenet_pytorch is not installed: `pip install --no-deps facenet-pytorch==2.6.0`"
        )
    for location in spec.submodule_search_locations:
        data = Path(location) / "data"
        if all((data / f"{name}.pt").is_file() for name in NET_NAMES):
            return data
    raise FileNotFoundError(f"no MTCNN weights under {list(spec.submodule_search_locations)}")


class _GraphWriter:
    """Accumulates nodes and initialisers; names every tensor after the torch layer it comes from."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def _param(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def conv(self, x: str, layer: str, output: str | None = None) -> str:
        out = output or layer
        w = self.weights[f"{layer}.weight"]
        self.nodes.append(
            helper.make_node(
                "Conv",
                [
                    x,
                    self._param(f"{layer}.weight", w),
                    self._param(f"{layer}.bias", self.weights[f"{layer}.bias"]),
                ],
                [out],
                name=layer,
                kernel_shape=list(w.shape[2:]),
            )
        )
        return out

    def prelu(self, x: str, layer: str, spatial: bool) -> str:
        # ONNX broadcasts the slope from the right: (C, 1, 1) against NCHW, (C,) against (N, C).
        slope = self.weights[f"{layer}.weight"]
        slope = slope.reshape(-1, 1, 1) if spatial else slope
        inputs = [x, self._param(f"{layer}.weight", slope)]
        self.nodes.append(helper.make_node("PRelu", inputs, [layer], name=layer))
        return layer

    def slice(self, x: str, name: str, starts: list[int], ends: list[int], axes: list[int]) -> str:
        bounds = []
        for key, values in (("starts", starts), ("ends", ends), ("axes", axes)):
            self.initializers.append(numpy_helper.from_array(np.asarray(values, np.int64), f"{name}.{key}"))
            bounds.append(f"{name}.{key}")
        self.nodes.append(helper.make_node("Slice", [x, *bounds], [name], name=name))
        return name

    def add(self, a: str, b: str, name: str) -> str:
        self.nodes.append(helper.make_node("Add", [a, b], [name], name=name))
        return name

    def max_pool(self, x: str, name: str, kernel: int) -> str:
        # torch's ceil_mode=True keeps the partial window at the right and bottom edges.
        self.nodes.append(
            helper.make_node(
                "MaxPool", [x], [name], name=name, kernel_shape=[kernel, kernel], strides=[2, 2], ceil_mode=1
            )
        )
        return name

    def flatten_whc(self, x: str) -> str:
        self.nodes.append(helper.make_node("Transpose", [x], ["nwhc"], name="to_nwhc", perm=[0, 3, 2, 1]))
        self.nodes.append(helper.make_node("Flatten", ["nwhc"], ["flat"], name="flatten", axis=1))
        return "flat"

    def dense(self, x: str, layer: str, output: str | None = None) -> str:
        out = output or layer
        self.nodes.append(
            helper.make_node(
                "Gemm",
                [
                    x,
                    self._param(f"{layer}.weight", self.weights[f"{layer}.weight"]),
                    self._param(f"{layer}.bias", self.weights[f"{layer}.bias"]),
                ],
                [out],
                name=layer,
                transB=1,
            )
        )
        return out

    def softmax(self, x: str, output: str) -> str:
        self.nodes.append(helper.make_node("Softmax", [x], [output], name=f"{output}_softmax", axis=1))
        return output


def _pnet(g: _GraphWriter, packed: bool = False) -> None:
    pixels = g.slice("input", "rgb", [0], [3], [1]) if packed else "input"
    x = g.prelu(g.conv(pixels, "conv1"), "prelu1", spatial=True)
    if packed:
        # conv1 (3x3, unpadded) trims 2 rows and columns: an output's mask cell is its window's top-left.
        mask = g.slice("input", "mask", [3, 0, 0], [4, -2, -2], [1, 2, 3])
        x = g.add(x, mask, "masked")
    x = g.max_pool(x, "pool1", 2)
    x = g.prelu(g.conv(x, "conv2"), "prelu2", spatial=True)
    x = g.prelu(g.conv(x, "conv3"), "prelu3", spatial=True)
    g.conv(x, "conv4_2", "reg")
    g.softmax(g.conv(x, "conv4_1"), "prob")


def _rnet(g: _GraphWriter) -> None:
    x = g.prelu(g.conv("input", "conv1"), "prelu1", spatial=True)
    x = g.max_pool(x, "pool1", 3)
    x = g.prelu(g.conv(x, "conv2"), "prelu2", spatial=True)
    x = g.max_pool(x, "pool2", 3)
    x = g.prelu(g.conv(x, "conv3"), "prelu3", spatial=True)
    x = g.prelu(g.dense(g.flatten_whc(x), "dense4"), "prelu4", spatial=False)
    g.dense(x, "dense5_2", "reg")
    g.softmax(g.dense(x, "dense5_1"), "prob")


def _onet(g: _GraphWriter) -> None:
    x = g.prelu(g.conv("input", "conv1"), "prelu1", spatial=True)
    x = g.max_pool(x, "pool1", 3)
    x = g.prelu(g.conv(x, "conv2"), "prelu2", spatial=True)
    x = g.max_pool(x, "pool2", 3)
    x = g.prelu(g.conv(x, "conv3"), "prelu3", spatial=True)
    x = g.max_pool(x, "pool3", 2)
    x = g.prelu(g.conv(x, "conv4"), "prelu4", spatial=True)
    x = g.prelu(g.dense(g.flatten_whc(x), "dense5"), "prelu5", spatial=False)
    g.dense(x, "dense6_2", "reg")
    g.dense(x, "dense6_3", "landmarks")
    g.softmax(g.dense(x, "dense6_1"), "prob")


Shape = list[str | int]
# net -> (layers, input shape, outputs in the order of the torch module's forward)
_LAYOUT: dict[str, tuple[Callable[[_GraphWriter], None], Shape, dict[str, Shape]]] = {
    "pnet": (_pnet, ["N", 3, "H", "W"], {"reg": ["N", 4, "h", "w"], "prob": ["N", 2, "h", "w"]}),
    PACKED_PNET: (
        functools.partial(_pnet, packed=True),
        ["N", 4, "H", "W"],
        {"reg": ["N", 4, "h", "w"], "prob": ["N", 2, "h", "w"]},
    ),
    "rnet": (_rnet, ["N", 3, 24, 24], {"reg": ["N", 4], "prob": ["N", 2]}),
    "onet": (_onet, ["N", 3, 48, 48], {"reg": ["N", 4], "landmarks": ["N", 10], "prob": ["N", 2]}),
}


def _source_version() -> str:
    try:
        return importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"  # weights copied from elsewhere: the checksum still identifies them


def build_mtcnn_nets(weights_dir: Path) -> dict[str, onnx.ModelProto]:
    """The MTCNN graphs, checked by ``onnx.checker``, keyed ``pnet``, ``rnet``, ``onet`` and
    ``pnet_packed`` (P-Net's weights too)."""
    version = _source_version()
    models: dict[str, onnx.ModelProto] = {}
    for name in (*NET_NAMES, PACKED_PNET):
        path = weights_dir / f"{WEIGHTS_OF.get(name, name)}.pt"
        raw = path.read_bytes()
        writer = _GraphWriter(load_state_dict(raw))
        body, input_shape, outputs = _LAYOUT[name]
        body(writer)
        model = checked_model(
            f"mtcnn_{name}",
            writer.nodes,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape) for out, shape in outputs.items()],
            writer.initializers,
            doc=f"MTCNN {name} from {SOURCE_PACKAGE} {version}; input NCHW RGB (x - 127.5) / 128",
            properties={
                "source_package": SOURCE_PACKAGE,
                "source_version": version,
                "source_file": path.name,
                "source_sha256": hashlib.sha256(raw).hexdigest(),
            },
        )
        models[name] = model
    return models
