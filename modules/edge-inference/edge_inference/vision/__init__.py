"""Pixels to detections: decoding, letterbox preprocessing, the ONNX Runtime model, postprocessing."""
