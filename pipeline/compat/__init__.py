"""The compat clients: the release run in clients we did not write (MediaPipe, OpenCV DNN, tflite-runtime,
LiteRT, onnxruntime), each in a venv of its own."""
