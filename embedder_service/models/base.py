"""Small base class shared by every ONNX model of the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from embedder_service.models.session import RuntimeOptions, create_session
from embedder_service.telemetry import MODEL_INPUT_SHAPES


class OnnxModel:
    """One ONNX graph behind a lazily opened session.

    Subclasses add the task's pre- and post-processing around :meth:`run`. ``input_shapes`` are
    the distinct input shapes the graph has been run on: on the GPU each new one costs an
    algorithm search and allocations, so the models keep them to a few buckets.
    """

    def __init__(self, model_path: Path, runtime: RuntimeOptions, cpu_memory_arena: bool = True) -> None:
        self.model_path = model_path
        self.runtime = runtime
        self._cpu_memory_arena = cpu_memory_arena
        self._session: ort.InferenceSession | None = None
        self.input_shapes: set[tuple[int, ...]] = set()

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            if not self.model_path.is_file():
                raise FileNotFoundError(f"model file {self.model_path} is missing: run `make models`")
            self._session = create_session(self.model_path, self.runtime, self._cpu_memory_arena)
        return self._session

    @property
    def providers_in_use(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Run the graph on its single input; returns every output, in graph order."""
        name = self.session.get_inputs()[0].name
        self._seen(inputs.shape)
        return [np.asarray(out) for out in self.session.run(None, {name: inputs})]

    def _seen(self, shape: tuple[int, ...]) -> None:
        if shape not in self.input_shapes:
            self.input_shapes.add(shape)
            MODEL_INPUT_SHAPES.labels(self.model_path.stem).set(len(self.input_shapes))
