"""Prediction-time parts: checkpoint and bundle loading, the detector and classifier runners and
their PyTorch and ONNX Runtime backends. Nothing here imports ``drustage.training``; training,
evaluation, the pipeline and the service build on it."""
