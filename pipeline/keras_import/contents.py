"""What the scan of a model file reports (keras_import/scan.py): the layers and ops it holds, what was refused
and why; the plausibility bounds past which a file is damaged, not a model; the scan's shared helpers."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ModelError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Plausibility bounds, far beyond any 28×28 classifier: a file past them is damaged, not a model.
MAX_DIM = 1 << 16                 # any input dimension, units, filters, kernel size
MAX_MEMBER_BYTES = 1 << 30        # one member of a .keras archive, uncompressed
MAX_JSON_BYTES = 64 << 20
MAX_DEPTH = 200                   # nesting of a config


@dataclass
class Refusal:
    what: str                 # "Lambda layer 'lambda'", "op WriteFile in function __inference_serve_8366"
    why: str                  # the rest of the sentence: what would run on this machine

    def __str__(self) -> str:
        return f"{self.what} {self.why}"


@dataclass
class Contents:
    """What a model file holds, read without loading it."""

    path: Path
    format: str                                       # as importer.FORMATS
    layers: Counter = field(default_factory=Counter)  # layer class → count, nested models included
    ops: Counter = field(default_factory=Counter)     # graph op → count over the graph and its functions
    refused: list[Refusal] = field(default_factory=list)

    @property
    def carried(self) -> list[str]:
        return [r.what for r in self.refused]

    def error(self) -> ModelError:
        """The one-line refusal: the file, the first thing refused and why, how many more."""
        first, rest = self.refused[0], self.refused[1:]
        more = f" (and {len(rest)} more: {', '.join(r.what for r in rest[:3])}{', …' if len(rest) > 3 else ''})" \
            if rest else ""
        return ModelError(f"{self.path.name}: {first}{more}; refused: give --trust-model only if you wrote this "
                          "file or trust its code")


def read_json(path: Path, raw: bytes | str, what: str):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:          # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelError(f"{path}: {what} is not valid JSON ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}): "
                         "the file is damaged") from None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:160] if text else type(e).__name__)
