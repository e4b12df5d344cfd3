"""The release on a microcontroller: TensorFlow Lite Micro parity, arena and flash, C source, board fit."""
