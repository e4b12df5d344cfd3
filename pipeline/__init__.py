"""fashion-edge training side: data → train → prune → quantize → export → validate → report."""
import os

# tfmot's pruning API needs Keras 2: every entry point imports this package before TensorFlow,
# so tf.keras resolves to tf_keras. Keras 3 models also break the TFLite and ONNX converters.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TF 2.21 turns oneDNN on by default only on CPUs it recognises; on this AVX2 machine it stayed off
# and an epoch of `compact` took 47-54 s. With oneDNN: 27-30 s (measured, same run, same data).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
