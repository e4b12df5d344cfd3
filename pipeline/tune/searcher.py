"""Optuna's TPE for `python -m pipeline tune`, without running one architecture twice.

With a small categorical space TPE keeps proposing its best point: in a 40-trial search it proposed one
architecture 5 times, and training is deterministic, so 4 trials learnt nothing. Here a proposal equal to
an earlier one (the same blocks, widths in use, convs, kernel, pooling, separability and sparsity) is
answered from that trial's result (or dropped, while it still runs) and Optuna is asked again.
Imports Ray: loaded only by the search itself.
"""
from __future__ import annotations

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from pipeline.tune import space

RETRIES = 25


class DistinctOptunaSearch(OptunaSearch):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._seen: dict[str, float | None] = {}       # architecture → its objective (None: still running)
        self._key: dict[str, str] = {}                   # Ray trial id → architecture
        self._alias: dict[str, str] = {}                 # Ray trial id → the Optuna trial that answers it
        self.skipped = 0

    def suggest(self, trial_id: str):
        params = None
        for attempt in range(RETRIES):
            inner = trial_id if attempt == 0 else f"{trial_id}~{attempt}"
            params = super().suggest(inner)
            if params in (None, Searcher.FINISHED):
                return params
            key = space.describe(params)
            if key not in self._seen or attempt == RETRIES - 1:
                self._alias[trial_id] = inner
                self._key[trial_id] = key
                self._seen.setdefault(key, None)
                return params
            self.skipped += 1
            known = self._seen[key]
            if known is None:             # the same architecture is training now: this proposal is dropped
                super().on_trial_complete(inner, error=True)
            else:                         # tell Optuna what that architecture scored, ask again
                super().on_trial_complete(inner, result={self.metric: known})
        return params

    def on_trial_result(self, trial_id: str, result: dict):
        super().on_trial_result(self._alias.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        key = self._key.get(trial_id)
        if key is not None:
            if result and not error and result.get(self.metric) is not None:
                self._seen[key] = float(result[self.metric])
            elif self._seen.get(key) is None:
                self._seen.pop(key, None)         # failed or interrupted: it may be proposed again
        super().on_trial_complete(self._alias.get(trial_id, trial_id), result=result, error=error)
