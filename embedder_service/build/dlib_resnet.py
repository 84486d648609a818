"""Build dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as ONNX.

The weights come from the ``face_recognition_models`` package (CC0) and are read by
:mod:`embedder_service.build.dlib_format`; the graph is written with ``onnx.helper``, so
neither dlib nor any framework is needed.

Graph contract (the encoder relies on it):

- input ``input``: float32 ``(batch, 3, 150, 150)``, RGB, already normalised as
  ``(pixel - INPUT_MEAN) * INPUT_SCALE``; chips as ``dlib.get_face_chip(img, shape, 150, 0.25)``
  makes them;
- output ``embedding``: float32 ``(batch, 128)``, raw, NOT L2-normalised (dlib's same-person
  rule is Euclidean distance < 0.6 on these raw vectors).

Each affine layer is folded into the convolution before it, so the graph is Conv, Relu,
MaxPool, AveragePool, Pad, Add, GlobalAveragePool, Flatten and Gemm only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from embedder_service.build.dlib_format import (
    Affine,
    Conv,
    DlibNetwork,
    FullyConnected,
    Layer,
    Pool,
    Relu,
    Slot,
    parse_network,
)
from embedder_service.build.graphs import checked_model

INPUT_SIZE = 150
INPUT_MEAN = (122.782, 117.001, 104.298)
INPUT_SCALE = 1 / 256
EMBEDDING_DIM = 128
MODEL_NAME = "dlib_resnet_v1"
SOURCE_PACKAGE = "face_recognition_models"
WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# The file does not say where tags and skips go nor which tag an add_prev adds, so the
# topology is spelled out here, innermost first, after dlib's `anet_type` in
# examples/dnn_face_recognition_ex.cpp. Computing layers are named by kind and take their
# hyperparameters (filters, kernel, stride, padding) from the file; `tagN`, `skipN` and
# `add_prevN` carry dlib's tag ids.
#   block<N, stride>  = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,stride,stride, x>>>>>
_BLOCK = ("con", "affine", "relu", "con", "affine")
#   ares<N>      = relu<add_prev1<block<N,1, tag1<x>>>>
_ARES = ("tag1", *_BLOCK, "add_prev1", "relu")
#   ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N,2, tag1<x>>>>>>>
_ARES_DOWN = ("tag1", *_BLOCK, "tag2", "skip1", "avg_pool", "add_prev2", "relu")
ANET_TOPOLOGY: tuple[str, ...] = (
    *("con", "affine", "relu", "max_pool"),  # con<32,7,7,2,2>, max_pool<3,3,2,2>
    *_ARES * 3,  # alevel4: 32 channels
    *_ARES_DOWN,
    *_ARES * 3,  # alevel3: 64
    *_ARES_DOWN,
    *_ARES * 2,  # alevel2: 128
    *_ARES_DOWN,
    *_ARES * 2,  # alevel1: 256
    *_ARES_DOWN,  # alevel0: 256
    *("avg_pool", "fc"),  # avg_pool_everything, fc_no_bias<128>
)
_TAG_STEP = re.compile(r"(tag|skip|add_prev)(\d+)")


@dataclass(frozen=True)
class _TagStep:
    """A topology step that only moves tensors around: remember (tag), recall (skip) or add."""

    action: str  # "tag", "skip" or "add_prev"
    tag: int


_Step = Layer | _TagStep


def locate_dlib_weights() -> Path:
    """``models/dlib_face_recognition_resnet_model_v1.dat`` of the installed face_recognition_models.

    Found through the import system without importing the package: its ``__init__``
    imports ``pkg_resources``, which recent setuptools no longer ships.
    """
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{SOURCE_PACKAGE} is not installed: `pip install --no-deps {SOURCE_PACKAGE}`"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / WEIGHTS_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {WEIGHTS_FILE} under {list(spec.submodule_search_locations)}")


def _split(name: str) -> tuple[str, int | None]:
    """``"add_prev2"`` -> ``("add_prev", 2)``; a computing layer's kind -> ``(kind, None)``."""
    match = _TAG_STEP.fullmatch(name)
    return (match[1], int(match[2])) if match else (name, None)


def _resolve(network: DlibNetwork, topology: tuple[str, ...]) -> list[_Step]:
    """Pair the topology with the file's layers, checking it agrees wherever the file can tell."""
    if len(topology) != len(network.slots):
        raise ValueError(f"the file holds {len(network.slots)} layers, the topology {len(topology)}")
    layers = iter(network.layers)
    steps: list[_Step] = []
    for position, (expected, slot) in enumerate(zip(topology, network.slots, strict=True)):
        kind, tag = _split(expected)
        # Tags and skips write only their version; add_prev, like every computing layer, its name too.
        layer = next(layers) if slot is Slot.LAYER else None
        found = layer.name if layer is not None else "a tag or skip"
        if found != ("a tag or skip" if kind in ("tag", "skip") else kind):
            raise ValueError(
                f"layer {position} (innermost first): topology says {expected}, file has {found}"
            )
        if tag is not None:
            steps.append(_TagStep(action=kind, tag=tag))  # add_prev's record holds nothing more
        elif layer is not None:
            steps.append(layer)
    return steps


def _fold_affine(conv: Conv, affine: Affine) -> Conv:
    """gamma * (W * x + b) + beta == (gamma W) * x + (gamma b + beta), per output channel."""
    gamma = affine.gamma.astype(np.float64)
    weights = conv.weights.astype(np.float64) * gamma[:, None, None, None]
    bias = conv.bias.astype(np.float64) * gamma + affine.beta.astype(np.float64)
    return Conv(
        weights=weights.astype(np.float32),
        bias=bias.astype(np.float32),
        stride=conv.stride,
        padding=conv.padding,
    )


def _fold_affines(steps: list[_Step]) -> list[_Step]:
    folded: list[_Step] = []
    for step in steps:
        if isinstance(step, Affine):
            previous = folded.pop() if folded else None
            if not isinstance(previous, Conv):
                raise ValueError("an affine layer that does not follow a convolution cannot be folded")
            folded.append(_fold_affine(previous, step))
        else:
            folded.append(step)
    return folded


Shape = tuple[int, int, int]  # one sample's (channels, rows, cols); (features, 1, 1) once flattened


@dataclass
class _GraphWriter:
    """Appends nodes for one step at a time, tracking the current tensor and its static shape."""

    current: str
    shape: Shape
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    tags: dict[int, tuple[str, Shape]] = field(default_factory=dict)

    def _name(self, op: str) -> str:
        return f"{op}_{len(self.nodes)}"

    def _constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def _node(self, op: str, inputs: list[str], shape: Shape, **attributes: Any) -> str:
        name = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        self.current, self.shape = name, shape
        return name

    def step(self, step: _Step) -> None:
        match step:
            case Conv():
                self._conv(step)
            case Relu():
                self._node("Relu", [self.current], self.shape)
            case Pool():
                self._pool(step)
            case FullyConnected():
                self._fc(step)
            case _TagStep(action="tag"):
                self.tags[step.tag] = (self.current, self.shape)
            case _TagStep(action="skip"):
                self.current, self.shape = self.tags[step.tag]
            case _TagStep(action="add_prev"):
                self._add_prev(*self.tags[step.tag])
            case _:
                raise ValueError(f"no ONNX translation for {step}")

    def _conv(self, conv: Conv) -> None:
        out_channels, in_channels, kernel_rows, kernel_cols = conv.weights.shape
        if in_channels != self.shape[0]:
            raise ValueError(f"convolution expects {in_channels} channels, gets {self.shape[0]}")
        name = self._name("conv")
        weights = self._constant(f"{name}.weight", conv.weights)
        bias = self._constant(f"{name}.bias", conv.bias)
        shape = (
            out_channels,
            *_pooled(self.shape[1:], (kernel_rows, kernel_cols), conv.stride, conv.padding),
        )
        (pad_y, pad_x) = conv.padding
        self._node(
            "Conv",
            [self.current, weights, bias],
            shape,
            kernel_shape=[kernel_rows, kernel_cols],
            strides=list(conv.stride),
            pads=[pad_y, pad_x, pad_y, pad_x],
        )

    def _pool(self, pool: Pool) -> None:
        channels = self.shape[0]
        if pool.is_global:
            if pool.mode != "avg":
                raise ValueError("only global average pooling is supported")
            self._node("GlobalAveragePool", [self.current], (channels, 1, 1))
            return
        (pad_y, pad_x) = pool.padding
        self._node(
            "MaxPool" if pool.mode == "max" else "AveragePool",
            [self.current],
            (channels, *_pooled(self.shape[1:], pool.window, pool.stride, pool.padding)),
            kernel_shape=list(pool.window),
            strides=list(pool.stride),
            pads=[pad_y, pad_x, pad_y, pad_x],
        )

    def _fc(self, fc: FullyConnected) -> None:
        inputs, outputs = fc.weights.shape
        if inputs != math.prod(self.shape):
            raise ValueError(f"fc expects {inputs} inputs, gets {self.shape}")
        # dlib flattens each sample as (k, nr, nc), which is ONNX's NCHW Flatten.
        flat = self._node("Flatten", [self.current], (inputs, 1, 1), axis=1)
        name = self._name("gemm")
        operands = [flat, self._constant(f"{name}.weight", fc.weights)]
        if fc.bias is not None:
            operands.append(self._constant(f"{name}.bias", fc.bias))
        self._node("Gemm", operands, (outputs, 1, 1))

    def _add_prev(self, tagged: str, tagged_shape: Shape) -> None:
        # dlib's add_prev with mismatched shapes sums into the larger shape, treating missing
        # values as zeros, at the end of each axis: more channels after a down-sampling block,
        # and 3x3 + 4x4, 1x1 + 2x2 spatially where the strided conv and the pool round apart.
        target: Shape = (
            max(self.shape[0], tagged_shape[0]),
            max(self.shape[1], tagged_shape[1]),
            max(self.shape[2], tagged_shape[2]),
        )
        operands = [
            self._pad_to(self.current, self.shape, target),
            self._pad_to(tagged, tagged_shape, target),
        ]
        self._node("Add", operands, target)

    def _pad_to(self, tensor: str, shape: Shape, target: Shape) -> str:
        if shape == target:
            return tensor
        name = self._name("pad")
        after = [want - have for want, have in zip(target, shape, strict=True)]
        pads = self._constant(f"{name}.pads", np.array([0, 0, 0, 0, 0, *after], dtype=np.int64))
        self.nodes.append(helper.make_node("Pad", [tensor, pads], [name], name=name, mode="constant"))
        return name


def _pooled(
    size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int]:
    """Output rows and cols of a convolution or pooling window; dlib and ONNX both round down."""
    rows, cols = (
        (length + 2 * pad - extent) // step + 1
        for length, extent, step, pad in zip(size, window, stride, padding, strict=True)
    )
    return rows, cols


def _source_version() -> str:
    try:
        return importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"  # weights copied from elsewhere: the checksum still identifies them


def build_dlib_resnet(dat_path: Path) -> onnx.ModelProto:
    """The ResNet as an ONNX model checked by ``onnx.checker`` (see the module docstring)."""
    raw = dat_path.read_bytes()
    try:
        network = parse_network(raw)
    except ValueError as error:
        raise ValueError(f"{dat_path}: {error}") from error
    if (network.input.rows, network.input.cols) != (INPUT_SIZE, INPUT_SIZE) or not np.allclose(
        network.input.mean_rgb, INPUT_MEAN, rtol=0, atol=1e-4
    ):
        raise ValueError(f"{dat_path}: input layer {network.input} differs from this module's constants")

    writer = _GraphWriter(current="input", shape=(3, INPUT_SIZE, INPUT_SIZE))
    for step in _fold_affines(_resolve(network, ANET_TOPOLOGY)):
        writer.step(step)
    if writer.shape != (EMBEDDING_DIM, 1, 1) or writer.nodes[-1].op_type != "Gemm":
        raise ValueError(f"{dat_path}: the network ends in {writer.shape}, not a {EMBEDDING_DIM}-d fc layer")
    writer.nodes[-1].output[0] = "embedding"

    version = _source_version()
    return checked_model(
        MODEL_NAME,
        writer.nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBEDDING_DIM])],
        writer.initializers,
        doc=(
            f"dlib face-recognition ResNet from {SOURCE_PACKAGE} {version}; input (pixel - mean_rgb) / 256, "
            f"NCHW RGB {INPUT_SIZE}x{INPUT_SIZE} chips, mean_rgb {INPUT_MEAN}; output raw {EMBEDDING_DIM}-d"
        ),
        properties={
            "model_name": MODEL_NAME,
            "source_package": SOURCE_PACKAGE,
            "source_version": version,
            "source_file": dat_path.name,
            "source_sha256": hashlib.sha256(raw).hexdigest(),
        },
    )
