"""The Fashion-MNIST loader: the four IDX files found, checked and split (pipeline/data/fashion_mnist.py)."""
