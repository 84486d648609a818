"""Builders that turn weights shipped by registry packages into ONNX graphs, without their frameworks."""
