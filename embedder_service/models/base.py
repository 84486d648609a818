"""Small base class shared by every ONNX model of the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from embedder_service.models.session import RuntimeOptions, create_session, io_binding_device
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
        if runtime.require_gpu:
            # Opened now, so that start-up checks every session's provider, not only those warm-up runs.
            _ = self.session

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
        """Run the graph on its single input; returns every output, in graph order, on the CPU."""
        session = self.session
        name = session.get_inputs()[0].name
        self._seen(inputs.shape)
        # Asked on every run: ONNX Runtime may move a session to the CPU after a provider failure.
        device = io_binding_device(self.runtime, session.get_providers())
        if device is None:
            return [np.asarray(out) for out in session.run(None, {name: inputs})]
        return run_bound(session, name, inputs, device, self.runtime.cuda_device_id)

    def _seen(self, shape: tuple[int, ...]) -> None:
        if shape not in self.input_shapes:
            self.input_shapes.add(shape)
            MODEL_INPUT_SHAPES.labels(self.model_path.stem).set(len(self.input_shapes))


def run_bound(
    session: ort.InferenceSession, input_name: str, inputs: np.ndarray, device: str, device_id: int
) -> list[np.ndarray]:
    """One run with IO binding: ``inputs`` bound from the host, every output left in memory ORT
    allocates on ``device`` (its arena, reused from run to run) and copied back once, after the run.

    A fresh binding per run: bindings hold their buffers, and runs may come from several threads.
    """
    binding = session.io_binding()
    binding.bind_cpu_input(input_name, inputs)
    for output in session.get_outputs():
        binding.bind_output(output.name, device, device_id)
    session.run_with_iobinding(binding)
    return list(binding.copy_outputs_to_cpu())
