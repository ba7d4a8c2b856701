"""Mustangs serving: export an ensemble to one ONNX graph and serve it over HTTP."""
