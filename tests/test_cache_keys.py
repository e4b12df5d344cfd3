"""The stage cache keys of the shipped profiles, pinned: a refactor that changes one retrains everything.

Computed on the code before the stage subpackages (d276c8a^). The adapt key also hashes the bytes of
edge_runtime/decode.py and preprocess.py, so it is not pinned here."""
import pytest

from pipeline.config import make_config
from pipeline.train import fit
from pipeline.train.cache import stage_key

PINNED = {
    "default": ("938a29d89ba9", "83ce98b5b548"),
    "quick": ("cb424c783255", "7aa48ff5bd62"),
    "best": ("a0e721b454d7", "e03c81cd8a44"),
}


@pytest.mark.parametrize("profile", sorted(PINNED))
def test_train_and_prune_keys_of_each_profile_are_unchanged(profile):
    cfg = make_config(profile)
    train_key = fit.cache_key(cfg)
    assert (train_key, stage_key(train_key, cfg.prune)) == PINNED[profile]


def test_seed_model_train_key_is_unchanged():
    assert fit.cache_key(make_config("default", **{"train.model": "mlp"})) == "10882ce6ef0f"
