"""Training: the float model (fit, models, augment), pruning, and the adaptation on real photos (adapt,
photo_variants, footwear_pairs); every stage cached under build/ by its config (cache)."""
