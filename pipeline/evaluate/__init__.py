"""Measuring the artifacts: the parity gate, temperature scaling, real photos, an imported model's device
cost, and the model comparison."""
