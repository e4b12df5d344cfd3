import os

# Before anything imports TensorFlow: tfmot needs Keras 2, and there is no GPU to probe.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
