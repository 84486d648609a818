"""ONNX models of the face pipeline: detector, aligner, encoder, and the sessions that run them."""
