"""Hospital-side deployment: DICOMweb client, ONNX Runtime inference (optional dependencies, imported on use)."""
