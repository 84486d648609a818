"""FaceNet (Inception-ResNet-v1, VGGFace2 weights) as an ONNX graph, from the publisher's checkpoint.

The weights are facenet-pytorch's port of David Sandberg's ``20180402-114759`` TensorFlow model
(MIT; LFW 99.65% as published), a ``torch.save``'d state dict in facenet-pytorch's GitHub
releases. No registry ships them, so ``make models ENCODER=facenet-vggface2`` downloads the file
(pinned URL, size and sha256), reads it with :mod:`embedder_service.build.torch_pickle` (no torch)
and writes each layer with ``onnx.helper``, mirroring facenet-pytorch's ``InceptionResnetV1``.

Batch norms are folded into the convolution before them, and each residual block's ``scale`` into
its last convolution: the graph is Conv, Relu, MaxPool, Concat, Add and a final Gemm only, which
every ONNX Runtime provider runs fused.

Input ``input``: float32, (N, 3, 160, 160), RGB, ``(pixel - 127.5) / 128`` (facenet-pytorch's
``fixed_image_standardization``). Output ``embedding``: (N, 512), L2-normalised, as facenet-pytorch's
``forward`` returns it.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from embedder_service.build.graphs import checked_model
from embedder_service.build.sources import DownloadError, UnpinnedError, downloaded, verified
from embedder_service.build.torch_pickle import load_state_dict
from embedder_service.models.encoder import EncoderSpec

ENCODER_NAME = "facenet_vggface2"
# facenet-pytorch's own download URL for `InceptionResnetV1(pretrained="vggface2")`. The sha256 and
# size are the ones several independent public projects pin for this URL (docs/decisions/embedder.md).
CHECKPOINT_URL = (
    "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
)
CHECKPOINT_SHA256 = "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b"
CHECKPOINT_BYTES = 111_898_327
CHECKPOINT_RELEASE = "v2.2.9"

INPUT_SIZE = 160
INPUT_MEAN = (127.5, 127.5, 127.5)
INPUT_SCALE = 1 / 128
DIMENSION = 512
# facenet-pytorch's BatchNorm eps, "value found in tensorflow".
BN_EPS = 1e-3
LICENCE = "MIT (facenet-pytorch; weights from davidsandberg/facenet 20180402-114759)"
# Where MTCNN's 5 landmarks fall, on average, in the crops the model was trained and validated on
# (the MTCNN box plus 16 source pixels a side, resized to 160x160): measured on LFW View 1 with
# our MTCNN (docs/decisions/embedder.md, "FaceNet").
CHIP_TEMPLATE = [(55.06, 65.86), (108.55, 64.99), (82.01, 90.51), (58.97, 112.79), (106.22, 112.01)]
# Unverified here (the weights cannot be downloaded on the build machines): derived from a
# published LFW operating point for these weights; `make eval` recalibrates it where the checkpoint
# is present (docs/decisions/embedder.md, "FaceNet").
MATCH_THRESHOLD = 0.46


class CheckpointError(ValueError):
    """A FaceNet checkpoint that cannot be used: wrong bytes, wrong format or wrong shapes."""


def verify_checkpoint(path: Path, sha256: str = CHECKPOINT_SHA256) -> bytes:
    """The file's bytes, when their sha256 is the pinned one."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    with _refused_as_checkpoint_errors():
        return verified(path.read_bytes(), sha256, path)


def fetch_checkpoint(cache_dir: Path, url: str = CHECKPOINT_URL, sha256: str = CHECKPOINT_SHA256) -> bytes:
    """The checkpoint's verified bytes, downloaded into ``cache_dir`` unless already there (a
    download with another sha256 is deleted and refused)."""
    with _refused_as_checkpoint_errors():
        return downloaded(url, sha256, cache_dir, CHECKPOINT_BYTES)


@contextmanager
def _refused_as_checkpoint_errors() -> Iterator[None]:
    """The pinned-file errors of :mod:`embedder_service.build.sources`, told for the checkpoint."""
    try:
        yield
    except UnpinnedError as error:
        raise CheckpointError(
            f"{error.where} has sha256 {error.got} ({error.size:,} bytes), not the pinned {error.pinned}"
            f" ({CHECKPOINT_BYTES:,} bytes): a corrupt or different file; delete it and rebuild"
        ) from None
    except DownloadError as error:
        raise CheckpointError(
            f"could not download {error.url}: {error.cause}. Without internet access, copy the file to"
            f" {error.path}"
        ) from None


class _Writer:
    """Nodes and initialisers; every weight is taken by its facenet-pytorch name, shape checked."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.weights:
            raise CheckpointError(f"the checkpoint lacks {name}: not facenet-pytorch's InceptionResnetV1")
        array = self.weights[name]
        if array.shape != shape:
            raise CheckpointError(
                f"{name} has shape {tuple(array.shape)}, InceptionResnetV1 needs {shape}:"
                " a checkpoint of another network or embedding size"
            )
        return array.astype(np.float64)

    def param(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def batch_norm(self, prefix: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """The (scale, shift) of an inference-time batch norm."""
        gamma = self.take(f"{prefix}.weight", (channels,))
        beta = self.take(f"{prefix}.bias", (channels,))
        mean = self.take(f"{prefix}.running_mean", (channels,))
        var = self.take(f"{prefix}.running_var", (channels,))
        scale = gamma / np.sqrt(var + BN_EPS)
        return scale, beta - mean * scale

    def _conv(
        self, x: str, name: str, w: np.ndarray, b: np.ndarray, stride: int, padding: tuple[int, int]
    ) -> str:
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.param(f"{name}.weight", w), self.param(f"{name}.bias", b)],
                [name],
                name=name,
                kernel_shape=list(w.shape[2:]),
                strides=[stride, stride],
                pads=[padding[0], padding[1], padding[0], padding[1]],
            )
        )
        return name

    def relu(self, x: str) -> str:
        self.nodes.append(helper.make_node("Relu", [x], [f"{x}.relu"], name=f"{x}.relu"))
        return f"{x}.relu"

    def basic(
        self,
        x: str,
        prefix: str,
        channels: tuple[int, int],
        kernel: tuple[int, int],
        stride: int = 1,
        padding: tuple[int, int] = (0, 0),
    ) -> str:
        """facenet-pytorch's BasicConv2d: bias-free Conv, BatchNorm (folded in), ReLU."""
        cin, cout = channels
        w = self.take(f"{prefix}.conv.weight", (cout, cin, *kernel))
        scale, shift = self.batch_norm(f"{prefix}.bn", cout)
        return self.relu(self._conv(x, prefix, w * scale[:, None, None, None], shift, stride, padding))

    def residual(
        self, x: str, branches: list[str], prefix: str, channels: tuple[int, int], scale: float
    ) -> str:
        """Concat the branches, 1x1 conv (with ``scale`` folded in), add the block's input."""
        cat = self.concat(branches, f"{prefix}.cat")
        cin, cout = channels
        w = self.take(f"{prefix}.conv2d.weight", (cout, cin, 1, 1))
        b = self.take(f"{prefix}.conv2d.bias", (cout,))
        up = self._conv(cat, f"{prefix}.conv2d", w * scale, b * scale, 1, (0, 0))
        self.nodes.append(helper.make_node("Add", [up, x], [f"{prefix}.add"], name=f"{prefix}.add"))
        return f"{prefix}.add"

    def concat(self, branches: list[str], name: str) -> str:
        self.nodes.append(helper.make_node("Concat", branches, [name], name=name, axis=1))
        return name

    def max_pool(self, x: str, name: str) -> str:
        # torch's MaxPool2d(3, stride=2): no padding, floor mode.
        self.nodes.append(
            helper.make_node("MaxPool", [x], [name], name=name, kernel_shape=[3, 3], strides=[2, 2])
        )
        return name


def _block35(g: _Writer, x: str, p: str) -> str:
    b0 = g.basic(x, f"{p}.branch0", (256, 32), (1, 1))
    b1 = g.basic(x, f"{p}.branch1.0", (256, 32), (1, 1))
    b1 = g.basic(b1, f"{p}.branch1.1", (32, 32), (3, 3), padding=(1, 1))
    b2 = g.basic(x, f"{p}.branch2.0", (256, 32), (1, 1))
    b2 = g.basic(b2, f"{p}.branch2.1", (32, 32), (3, 3), padding=(1, 1))
    b2 = g.basic(b2, f"{p}.branch2.2", (32, 32), (3, 3), padding=(1, 1))
    return g.relu(g.residual(x, [b0, b1, b2], p, (96, 256), 0.17))


def _block17(g: _Writer, x: str, p: str) -> str:
    b0 = g.basic(x, f"{p}.branch0", (896, 128), (1, 1))
    b1 = g.basic(x, f"{p}.branch1.0", (896, 128), (1, 1))
    b1 = g.basic(b1, f"{p}.branch1.1", (128, 128), (1, 7), padding=(0, 3))
    b1 = g.basic(b1, f"{p}.branch1.2", (128, 128), (7, 1), padding=(3, 0))
    return g.relu(g.residual(x, [b0, b1], p, (256, 896), 0.10))


def _block8(g: _Writer, x: str, p: str, scale: float, relu: bool) -> str:
    b0 = g.basic(x, f"{p}.branch0", (1792, 192), (1, 1))
    b1 = g.basic(x, f"{p}.branch1.0", (1792, 192), (1, 1))
    b1 = g.basic(b1, f"{p}.branch1.1", (192, 192), (1, 3), padding=(0, 1))
    b1 = g.basic(b1, f"{p}.branch1.2", (192, 192), (3, 1), padding=(1, 0))
    out = g.residual(x, [b0, b1], p, (384, 1792), scale)
    return g.relu(out) if relu else out


def _mixed_6a(g: _Writer, x: str) -> str:
    b0 = g.basic(x, "mixed_6a.branch0", (256, 384), (3, 3), stride=2)
    b1 = g.basic(x, "mixed_6a.branch1.0", (256, 192), (1, 1))
    b1 = g.basic(b1, "mixed_6a.branch1.1", (192, 192), (3, 3), padding=(1, 1))
    b1 = g.basic(b1, "mixed_6a.branch1.2", (192, 256), (3, 3), stride=2)
    return g.concat([b0, b1, g.max_pool(x, "mixed_6a.branch2")], "mixed_6a")


def _mixed_7a(g: _Writer, x: str) -> str:
    b0 = g.basic(x, "mixed_7a.branch0.0", (896, 256), (1, 1))
    b0 = g.basic(b0, "mixed_7a.branch0.1", (256, 384), (3, 3), stride=2)
    b1 = g.basic(x, "mixed_7a.branch1.0", (896, 256), (1, 1))
    b1 = g.basic(b1, "mixed_7a.branch1.1", (256, 256), (3, 3), stride=2)
    b2 = g.basic(x, "mixed_7a.branch2.0", (896, 256), (1, 1))
    b2 = g.basic(b2, "mixed_7a.branch2.1", (256, 256), (3, 3), padding=(1, 1))
    b2 = g.basic(b2, "mixed_7a.branch2.2", (256, 256), (3, 3), stride=2)
    return g.concat([b0, b1, b2, g.max_pool(x, "mixed_7a.branch3")], "mixed_7a")


def _head(g: _Writer, x: str) -> str:
    """Global average pool, last_linear with last_bn folded in, L2 normalisation (dropout: eval no-op)."""
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["avgpool_1a"], name="avgpool_1a"))
    g.nodes.append(helper.make_node("Flatten", ["avgpool_1a"], ["flat"], name="flatten", axis=1))
    w = g.take("last_linear.weight", (DIMENSION, 1792))
    scale, shift = g.batch_norm("last_bn", DIMENSION)
    inputs = ["flat", g.param("last_linear.weight", w * scale[:, None]), g.param("last_linear.bias", shift)]
    g.nodes.append(helper.make_node("Gemm", inputs, ["last_bn"], name="last_linear", transB=1))
    g.nodes.append(
        helper.make_node("LpNormalization", ["last_bn"], ["embedding"], name="normalize", axis=1, p=2)
    )
    return "embedding"


def _inception_resnet_v1(g: _Writer) -> None:
    x = g.basic("input", "conv2d_1a", (3, 32), (3, 3), stride=2)
    x = g.basic(x, "conv2d_2a", (32, 32), (3, 3))
    x = g.basic(x, "conv2d_2b", (32, 64), (3, 3), padding=(1, 1))
    x = g.max_pool(x, "maxpool_3a")
    x = g.basic(x, "conv2d_3b", (64, 80), (1, 1))
    x = g.basic(x, "conv2d_4a", (80, 192), (3, 3))
    x = g.basic(x, "conv2d_4b", (192, 256), (3, 3), stride=2)
    for i in range(5):
        x = _block35(g, x, f"repeat_1.{i}")
    x = _mixed_6a(g, x)
    for i in range(10):
        x = _block17(g, x, f"repeat_2.{i}")
    x = _mixed_7a(g, x)
    for i in range(5):
        x = _block8(g, x, f"repeat_3.{i}", 0.20, relu=True)
    x = _block8(g, x, "block8", 1.0, relu=False)
    _head(g, x)


def encoder_spec(file: str) -> EncoderSpec:
    """The manifest entry the embedder loads this encoder by."""
    return EncoderSpec(
        name=ENCODER_NAME,
        file=file,
        dimension=DIMENSION,
        input_size=INPUT_SIZE,
        mean=INPUT_MEAN,
        scale=(INPUT_SCALE, INPUT_SCALE, INPUT_SCALE),
        channel_order="RGB",
        landmark_template=CHIP_TEMPLATE,
        match_threshold=MATCH_THRESHOLD,
    )


def build_facenet(raw: bytes) -> onnx.ModelProto:
    """The ONNX graph of a facenet-pytorch ``InceptionResnetV1`` state dict (legacy or zip format).

    Keys the embedding does not use (``logits.*``, the classifier of the training identities, and
    ``num_batches_tracked``) are ignored; a missing key or a wrong shape raises
    :class:`CheckpointError`.
    """
    try:
        weights = load_state_dict(raw)
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError) as error:
        raise CheckpointError(f"not a readable torch.save state dict: {error}") from None
    writer = _Writer(weights)
    _inception_resnet_v1(writer)
    return checked_model(
        ENCODER_NAME,
        writer.nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", DIMENSION])],
        writer.initializers,
        doc=(
            "FaceNet Inception-ResNet-v1 (VGGFace2, 20180402-114759) from facenet-pytorch's checkpoint;"
            " input NCHW RGB 160x160 (x - 127.5) / 128; output L2-normalised 512-d embedding"
        ),
        properties={
            "source_url": CHECKPOINT_URL,
            "source_sha256": hashlib.sha256(raw).hexdigest(),
        },
    )
