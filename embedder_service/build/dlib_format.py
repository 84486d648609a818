"""Reader for dlib's binary serialisation of DNN networks (``dlib::serialize(net, out)``).

Written by hand because no Python library reads dlib's format without dlib itself, and the
build must not need dlib (its wheels are unofficial, its sdist compiles for many minutes).
Only what a trained ``loss_metric`` network such as ``dlib_face_recognition_resnet_model_v1.dat``
uses is supported; anything else is rejected with a :class:`ValueError` naming it.

Primitives, as dlib writes them:

- integers: one control byte (low 4 bits: number of magnitude bytes, bit 7: negative),
  then the magnitude, little-endian;
- floating point: an int64 mantissa and an int16 exponent as two such integers, value
  ``m * 2**e``; exponents 32000, 32001, 32002 stand for +inf, -inf and NaN;
- strings: length, then the bytes; bools: one ASCII ``'0'`` or ``'1'``;
- tensors (version 2): n, k, nr, nc, then raw little-endian float32;
  alias tensors (version 1): n, k, nr, nc only, the view's offset being implied by its owner.

A network is written outside-in: the loss layer's details, then one version integer per
layer from the outermost to the innermost (2: a computing layer, 1: a tag or skip layer,
3: the computing layer sitting on the input layer, which ends the list), the input layer,
then every computing layer's details innermost first, each followed by its state (three
bools, three tensors; one more integer for the version-3 layer). Tags and skips write
nothing but their version, so which tag an ``add_prev`` refers to is not in the file: the
caller supplies the topology.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

# dlib's float_details marks non-finite values with these exponents.
_EXPONENT_SPECIALS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
_TENSOR_VERSION = 2
_ALIAS_TENSOR_VERSION = 1
# Layer-list versions of add_loss_layer's subnetworks (see the module docstring).
_TAG_OR_SKIP_VERSION = 1
_LAYER_VERSION = 2
_LAYER_ON_INPUT_VERSION = 3


class Slot(enum.Enum):
    """What one position of the layer stack holds, as far as the file can tell."""

    LAYER = "layer"  # a computing layer: its details are in ``DlibNetwork.layers``
    TAG_OR_SKIP = "tag_or_skip"  # writes only its version: its role and id are not stored


@dataclass(frozen=True)
class LossMetric:
    margin: float
    distance_threshold: float


@dataclass(frozen=True)
class InputRGBImageSized:
    """``input_rgb_image_sized``: the net sees (pixel - mean) / 256 per channel, RGB."""

    mean_rgb: tuple[float, float, float]
    rows: int
    cols: int


@dataclass(frozen=True, eq=False)
class Conv:
    name: ClassVar[str] = "con"
    weights: np.ndarray  # float32 (out, in, kernel_rows, kernel_cols)
    bias: np.ndarray  # float32 (out,)
    stride: tuple[int, int]  # (y, x)
    padding: tuple[int, int]  # (y, x), zeros on both sides


@dataclass(frozen=True, eq=False)
class Affine:
    """Per-channel ``gamma * x + beta``: dlib's inference form of a batch-norm layer."""

    name: ClassVar[str] = "affine"
    gamma: np.ndarray  # float32 (channels,)
    beta: np.ndarray  # float32 (channels,)


@dataclass(frozen=True)
class Relu:
    name: ClassVar[str] = "relu"


@dataclass(frozen=True)
class AddPrev:
    """Adds the output of a tag layer; which tag is part of the topology, not of the file."""

    name: ClassVar[str] = "add_prev"


@dataclass(frozen=True)
class Pool:
    mode: Literal["max", "avg"]
    window: tuple[int, int]  # (y, x); (0, 0) means the whole input (avg_pool_everything)
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def name(self) -> str:
        return f"{self.mode}_pool"

    @property
    def is_global(self) -> bool:
        return self.window == (0, 0)


@dataclass(frozen=True, eq=False)
class FullyConnected:
    name: ClassVar[str] = "fc"
    weights: np.ndarray  # float32 (inputs, outputs): dlib computes x @ weights
    bias: np.ndarray | None  # float32 (outputs,), None for fc_no_bias


Layer = Conv | Affine | Relu | AddPrev | Pool | FullyConnected


@dataclass(frozen=True)
class DlibNetwork:
    loss: LossMetric
    input: InputRGBImageSized
    slots: tuple[Slot, ...]  # innermost first
    layers: tuple[Layer, ...]  # innermost first, one per Slot.LAYER


class _Stream:
    """A cursor over the file's bytes; every read fails with ValueError past the end."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.offset = 0

    @property
    def at_end(self) -> bool:
        return self.offset == len(self._data)

    def take(self, count: int) -> bytes:
        end = self.offset + count
        if count < 0 or end > len(self._data):
            raise ValueError(
                f"truncated dlib file: {count} bytes wanted at offset {self.offset}, "
                f"{len(self._data) - self.offset} left"
            )
        chunk = self._data[self.offset : end]
        self.offset = end
        return chunk

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise ValueError(f"not a dlib integer: control byte {control:#04x} at offset {self.offset - 1}")
        magnitude = int.from_bytes(self.take(size), "little")
        return -magnitude if control & 0x80 else magnitude

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if exponent in _EXPONENT_SPECIALS:
            return _EXPONENT_SPECIALS[exponent]
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        start = self.offset
        raw = self.take(self.integer())
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"not a dlib string at offset {start}: {raw[:32]!r}") from None

    def boolean(self) -> bool:
        raw = self.take(1)
        if raw not in (b"0", b"1"):
            raise ValueError(f"not a dlib bool at offset {self.offset - 1}: {raw!r}")
        return raw == b"1"

    def tensor(self) -> np.ndarray:
        self._expect_version(_TENSOR_VERSION, "tensor")
        shape = tuple(self.integer() for _ in range(4))
        if min(shape) < 0:
            raise ValueError(f"negative tensor shape {shape} before offset {self.offset}")
        count = math.prod(shape)
        return np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)

    def alias_shape(self) -> tuple[int, int, int, int]:
        self._expect_version(_ALIAS_TENSOR_VERSION, "alias tensor")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return n, k, nr, nc

    def _expect_version(self, expected: int, what: str) -> None:
        found = self.integer()
        if found != expected:
            raise ValueError(
                f"unsupported {what} version {found} before offset {self.offset} (want {expected})"
            )


def _slice_params(params: np.ndarray, shapes: list[tuple[int, ...]], layer: str) -> list[np.ndarray]:
    """Cut a layer's flat parameter tensor into the views its alias tensors describe, in order."""
    flat = params.reshape(-1)
    sizes = [math.prod(shape) for shape in shapes]
    if sum(sizes) != flat.size:
        raise ValueError(f"{layer}: parameter tensor has {flat.size} values, its views need {sum(sizes)}")
    views, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        views.append(flat[start : start + size].reshape(shape))
        start += size
    return views


def _read_conv(s: _Stream) -> Conv:
    params = s.tensor()
    filters, rows, cols = s.integer(), s.integer(), s.integer()
    stride = (s.integer(), s.integer())
    padding = (s.integer(), s.integer())
    weight_shape, bias_shape = s.alias_shape(), s.alias_shape()
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        s.real()
    if weight_shape[0] != filters or weight_shape[2:] != (rows, cols) or bias_shape[1] != filters:
        raise ValueError(
            f"con_4: views {weight_shape}, {bias_shape} disagree with {filters} {rows}x{cols} filters"
        )
    weights, bias = _slice_params(params, [weight_shape, (filters,)], "con_4")
    return Conv(weights=weights, bias=bias, stride=stride, padding=padding)


def _read_affine(s: _Stream) -> Affine:
    params = s.tensor()
    gamma_shape, beta_shape = s.alias_shape(), s.alias_shape()
    mode = s.integer()
    # CONV_MODE (0) has one gamma per channel; FC_MODE (1) one per value, which no conv net here uses.
    if mode != 0 or gamma_shape != beta_shape or gamma_shape[0] != 1 or gamma_shape[2:] != (1, 1):
        raise ValueError(f"affine_: unsupported mode {mode} or shapes {gamma_shape}, {beta_shape}")
    gamma, beta = _slice_params(params, [(gamma_shape[1],), (beta_shape[1],)], "affine_")
    return Affine(gamma=gamma, beta=beta)


def _read_pool(s: _Stream, mode: Literal["max", "avg"]) -> Pool:
    window = (s.integer(), s.integer())
    stride = (s.integer(), s.integer())
    padding = (s.integer(), s.integer())
    return Pool(mode=mode, window=window, stride=stride, padding=padding)


def _read_fc(s: _Stream) -> FullyConnected:
    outputs, inputs = s.integer(), s.integer()
    params = s.tensor()
    weight_shape, bias_shape = s.alias_shape(), s.alias_shape()
    bias_mode = s.integer()  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        s.real()
    if bias_mode not in (0, 1) or weight_shape[:2] != (inputs, outputs):
        raise ValueError(f"fc_2: bias mode {bias_mode}, weights {weight_shape} for {inputs}->{outputs}")
    if bias_mode == 1:
        (weights,) = _slice_params(params, [(inputs, outputs)], "fc_2")
        return FullyConnected(weights=weights, bias=None)
    if bias_shape[:2] != (1, outputs):
        raise ValueError(f"fc_2: bias view {bias_shape} for {outputs} outputs")
    weights, bias = _slice_params(params, [(inputs, outputs), (outputs,)], "fc_2")
    return FullyConnected(weights=weights, bias=bias)


def _read_layer(s: _Stream) -> Layer:
    start = s.offset
    name = s.string()
    match name:
        case "con_4":
            return _read_conv(s)
        case "affine_":
            return _read_affine(s)
        case "relu_":
            return Relu()
        case "add_prev_":
            return AddPrev()
        case "max_pool_2":
            return _read_pool(s, "max")
        case "avg_pool_2":
            return _read_pool(s, "avg")
        case "fc_2":
            return _read_fc(s)
    raise ValueError(f"unsupported dlib layer {name!r} at offset {start}")


def _skip_layer_state(s: _Stream) -> None:
    """Training state saved after each layer's details (setup flags, gradients, cached output)."""
    for _ in range(3):
        s.boolean()
    for _ in range(3):
        s.tensor()


def parse_network(data: bytes) -> DlibNetwork:
    """Parse a whole serialised ``loss_metric`` network; ValueError if it is anything else."""
    s = _Stream(data)
    if (version := s.integer()) != 1:
        raise ValueError(f"not a dlib network: add_loss_layer version {version}, want 1")
    if (loss_name := s.string()) != "loss_metric_2":
        raise ValueError(f"unsupported dlib loss layer {loss_name!r}")
    loss = LossMetric(margin=s.real(), distance_threshold=s.real())

    slots: list[Slot] = []
    while (version := s.integer()) != _LAYER_ON_INPUT_VERSION:
        if version not in (_TAG_OR_SKIP_VERSION, _LAYER_VERSION):
            raise ValueError(f"unexpected layer version {version} before offset {s.offset}")
        slots.append(Slot.LAYER if version == _LAYER_VERSION else Slot.TAG_OR_SKIP)
    slots.append(Slot.LAYER)
    slots.reverse()

    if (input_name := s.string()) != "input_rgb_image_sized":
        raise ValueError(f"unsupported dlib input layer {input_name!r}")
    mean_rgb = (s.real(), s.real(), s.real())
    input_layer = InputRGBImageSized(mean_rgb=mean_rgb, rows=s.integer(), cols=s.integer())

    layers: list[Layer] = []
    for index in range(slots.count(Slot.LAYER)):
        layers.append(_read_layer(s))
        _skip_layer_state(s)
        if index == 0:
            s.integer()  # the layer on the input also saves its sample expansion factor
    if not s.at_end:
        raise ValueError(f"{len(data) - s.offset} unexpected bytes after the network at offset {s.offset}")
    return DlibNetwork(loss=loss, input=input_layer, slots=tuple(slots), layers=tuple(layers))


def read_network(path: Path) -> DlibNetwork:
    try:
        return parse_network(path.read_bytes())
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
