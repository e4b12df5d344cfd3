"""fashion-edge training side: data → train → prune → quantize → export → validate → report."""
import os

# tfmot's pruning API needs Keras 2: every entry point imports this package before TensorFlow,
# so tf.keras resolves to tf_keras. Keras 3 models also break the TFLite and ONNX converters.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
