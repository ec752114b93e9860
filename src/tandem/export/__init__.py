"""Export: a trained checkpoint → a bundle (fp32 ONNX, static int8 QDQ ONNX, manifest)."""
