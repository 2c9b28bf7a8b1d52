"""The worker node: serves ONNX models over the Open Inference Protocol and joins a coordinator."""
