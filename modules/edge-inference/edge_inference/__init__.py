"""edge-inference: an Azure IoT Edge module that runs ONNX object/defect detection on frames dropped onto a share.

Nothing happens at import time; `edge_inference.app` is the composition root and `python -m edge_inference`
its entry point.
"""

__version__ = "0.1.0"
