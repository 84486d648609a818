"""Small base class shared by every ONNX model of the pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from embedder_service.models.session import create_session


class OnnxModel:
    """One ONNX graph behind a lazily opened session.

    Subclasses add the task's pre- and post-processing around :meth:`run`.
    """

    def __init__(
        self,
        model_path: Path,
        providers: Sequence[str],
        intra_op_threads: int = 0,
        cpu_memory_arena: bool = True,
    ) -> None:
        self.model_path = model_path
        self._providers = list(providers)
        self._intra_op_threads = intra_op_threads
        self._cpu_memory_arena = cpu_memory_arena
        self._session: ort.InferenceSession | None = None

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            if not self.model_path.is_file():
                raise FileNotFoundError(f"model file {self.model_path} is missing: run `make models`")
            self._session = create_session(
                self.model_path, self._providers, self._intra_op_threads, self._cpu_memory_arena
            )
        return self._session

    @property
    def providers_in_use(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Run the graph on its single input; returns every output, in graph order."""
        name = self.session.get_inputs()[0].name
        return [np.asarray(out) for out in self.session.run(None, {name: inputs})]
