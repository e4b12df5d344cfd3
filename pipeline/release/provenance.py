"""Where a file and a release come from: content hashes and the git commit, the one place for both."""
from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

from edge_runtime.classifier import file_sha256


def sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as the device checks it against the manifest (edge_runtime's own function)."""
    return file_sha256(path)


def gzip_bytes(path: str | Path) -> int:
    """What the file costs compressed (gzip -9, no timestamp): what pruning's zeros buy."""
    return len(gzip.compress(Path(path).read_bytes(), 9, mtime=0))


def git_commit(repo: str | Path | None = None) -> str:
    """The short commit of the checkout `repo` (default: the current directory's), or "unknown"."""
    cmd = ["git", *(["-C", str(repo)] if repo else []), "rev-parse", "--short", "HEAD"]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def tool_versions() -> dict:
    """The versions of what converted and ran the artifacts (the manifest's "tools")."""
    from importlib.metadata import PackageNotFoundError, version
    names = {"tensorflow": "tensorflow", "tf_keras": "tf-keras", "tfmot": "tensorflow-model-optimization",
             "tf2onnx": "tf2onnx", "onnx": "onnx", "onnxruntime": "onnxruntime", "numpy": "numpy",
             "ai_edge_litert": "ai-edge-litert"}
    versions = {}
    for key, dist in names.items():
        try:
            versions[key] = version(dist)
        except PackageNotFoundError:
            versions[key] = "unknown"
    return versions
