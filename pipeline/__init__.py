"""fashion-edge training side: data → train → prune → adapt → quantize → parity gate → release; the chain is
pipeline/export.py, the layout docs/architecture.md."""
import os

# The TensorFlow environment of every pipeline process, the one definition: every entry point imports this
# package before TensorFlow, Ray Tune's workers get it as their runtime_env (tune/search.py), and the
# Makefile exports the same for the commands it runs (tests/test_config.py keeps the two equal).
TF_ENV = {
    # tfmot's pruning API needs Keras 2, so tf.keras resolves to tf_keras. Keras 3 models also break the
    # TFLite and ONNX converters.
    "TF_USE_LEGACY_KERAS": "1",
    "CUDA_VISIBLE_DEVICES": "-1",     # no GPU here: skip CUDA probing and its noise
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # TF 2.21 turns oneDNN on by default only on CPUs it recognises; on this AVX2 machine it stayed off
    # and an epoch of `compact` took 47-54 s. With oneDNN: 27-30 s (measured, same run, same data).
    "TF_ENABLE_ONEDNN_OPTS": "1",
}
os.environ["TF_USE_LEGACY_KERAS"] = TF_ENV["TF_USE_LEGACY_KERAS"]   # not a default: nothing works without it
for _key, _value in TF_ENV.items():
    os.environ.setdefault(_key, _value)
