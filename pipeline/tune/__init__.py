"""The Ray Tune search (`python -m pipeline tune`): a device-aware architecture search of the compact family."""
