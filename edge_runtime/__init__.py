"""Device side of fashion-edge: classify clothing pictures with an exported int8 model.

Needs only numpy, Pillow and one backend (ai-edge-litert or tflite-runtime for .tflite, onnxruntime
for .onnx); never TensorFlow, never `pipeline`.
"""

from .classifier import Classifier, Prediction
from .errors import EdgeError

__all__ = ["Classifier", "EdgeError", "Prediction"]
