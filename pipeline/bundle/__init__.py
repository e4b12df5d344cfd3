"""The device bundle (`make bundle`): edge_runtime as a wheel, the int8 models and install.sh in one archive."""
