"""Quantization and conversion: the int8 representative data, the TFLite artifacts, the ONNX artifacts and
the choice of the int8 ONNX model that ships."""
