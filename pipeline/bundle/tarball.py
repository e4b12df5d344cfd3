"""`python -m pipeline bundle` (`make bundle`): one file with what a device needs and nothing else.

    dist/fashion-edge-device-VERSION.tar.gz
      fashion-edge-device-VERSION/
        install.sh                                   makes a venv, installs, puts edge-classify on the PATH
        fashion_edge_runtime-VERSION-py3-none-any.whl  edge_runtime only: numpy, pillow + one backend extra
        release/                                     the int8 models, manifest.json, labels.txt, report.md
        wheels/                                      --with-wheels only: every wheel for TARGET, offline
        BUNDLE.json                                  what is inside, with sha256s

The wheel is built from edge_runtime/ with the project's own metadata (version, numpy/pillow, the tflite,
onnx and camera extras, the edge-classify script) and no `pipeline`, no TensorFlow. The archive is written
to a temporary name and renamed, so a failed run leaves no half bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

from pipeline.config import REPO
from pipeline.release import provenance
from pipeline.bundle import wheels
from pipeline.errors import PipelineError

INSTALL_SCRIPT = Path(__file__).with_name("install.sh")
DIST_NAME = "fashion-edge-runtime"
# The release files a device reads: the two int8 models (LiteRT, onnxruntime), their manifest (sha256,
# normalization, calibration), the labels, and the report that says what --threshold does on real photos.
RELEASE_FILES = ["model_int8.tflite", "model_int8.onnx", "manifest.json", "labels.txt", "report.md"]
DEVICE_EXTRAS = ["tflite", "onnx", "camera", "heic"]     # those of pyproject.toml's extras a device may want


def device_extras(project: dict) -> list[str]:
    """The device extras pyproject.toml defines (heic: pillow-heif, when the project has that extra)."""
    return [e for e in DEVICE_EXTRAS if e in project.get("optional-dependencies", {})]


def project_metadata(pyproject: Path = REPO / "pyproject.toml") -> dict:
    """The [project] table of pyproject.toml."""
    return tomllib.loads(pyproject.read_text())["project"]


def device_pyproject(project: dict) -> str:
    """pyproject.toml of the device package: the project's version, runtime dependencies, device extras
    and script, packaging edge_runtime alone."""
    extras = project["optional-dependencies"]
    lines = [
        "[build-system]", 'requires = ["setuptools>=61"]', 'build-backend = "setuptools.build_meta"', "",
        "[project]", f'name = "{DIST_NAME}"', f'version = "{project["version"]}"',
        'description = "fashion-edge device runtime: edge-classify (no TensorFlow)"',
        f'requires-python = "{project["requires-python"]}"',
        f"dependencies = {json.dumps(project['dependencies'])}", "",
        "[project.optional-dependencies]", *[f"{e} = {json.dumps(extras[e])}" for e in device_extras(project)], "",
        "[project.scripts]", 'edge-classify = "edge_runtime.cli:main"', "",
        "[tool.setuptools]", 'packages = ["edge_runtime"]', "",
        "[tool.setuptools.package-data]", 'edge_runtime = ["*.html"]', "",
    ]
    return "\n".join(lines)


def build_wheel(out: Path, work: Path) -> Path:
    """The wheel of edge_runtime alone, built offline with this venv's setuptools."""
    src = work / "src"
    shutil.copytree(REPO / "edge_runtime", src / "edge_runtime",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (src / "pyproject.toml").write_text(device_pyproject(project_metadata()))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-w", str(out), str(src)], capture_output=True, text=True)
    wheels = sorted(out.glob("fashion_edge_runtime-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise PipelineError(f"building the edge_runtime wheel failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return wheels[0]


def build(release: Path = REPO / "exported", dist: Path = REPO / "dist", *, with_wheels: bool = False,
          target: str = "aarch64-cp311", extras: list[str] | None = None, log=print) -> Path:
    """Write the bundle into `dist` and return its path. `with_wheels` adds every wheel `extras` (default:
    the device extras the project has) need on `target`, so install.sh runs with no network."""
    release = Path(release)
    missing = [f for f in RELEASE_FILES if not (release / f).is_file()]
    if missing:
        raise PipelineError(f"{release}: missing {', '.join(missing)} (run `make export`, or pass --release DIR)")
    known = device_extras(project_metadata())
    extras = list(extras or known)
    unknown = sorted(set(extras) - set(known))
    if unknown:
        raise PipelineError(f"unknown extra {', '.join(unknown)}; the device extras are {', '.join(known)}")
    if with_wheels and target not in wheels.TARGETS:
        raise PipelineError(f"unknown --target {target}; known: {', '.join(wheels.TARGETS)}")
    version = project_metadata()["version"]
    name = f"fashion-edge-device-{version}"
    archive = Path(dist) / (f"{name}-offline-{target}.tar.gz" if with_wheels else f"{name}.tar.gz")
    archive.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="bundle-", dir=archive.parent) as tmp:
        top = Path(tmp) / name
        (top / "release").mkdir(parents=True)
        wheel = build_wheel(top, Path(tmp))
        for f in RELEASE_FILES:
            shutil.copy2(release / f, top / "release" / f)
        shutil.copy2(INSTALL_SCRIPT, top / "install.sh")
        (top / "install.sh").chmod(0o755)
        info = {"bundle": name, "version": version, "git_commit": provenance.git_commit(REPO),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "release_created": json.loads((release / "manifest.json").read_text()).get("created"),
                "package": wheel.name, "extras": known, "wheels": None}
        if with_wheels:
            t = wheels.TARGETS[target]
            reqs = wheels.requirements(extras)
            log(f"bundle: downloading the {t.name} wheels: {' '.join(reqs)}")
            wheels.download(reqs, t, top / "wheels")     # pip's own HTTP cache makes a rerun quick
            (top / "wheels" / "requirements.txt").write_text("\n".join(reqs) + "\n")
            info["wheels"] = {"target": target, "python": t.python, "machine": t.machine, "glibc": t.glibc,
                              "extras": extras, "requirements": reqs}
        info["files"] = {str(p.relative_to(top)): {"bytes": p.stat().st_size, "sha256": provenance.sha256(p)}
                         for p in sorted(top.rglob("*")) if p.is_file()}
        (top / "BUNDLE.json").write_text(json.dumps(info, indent=1) + "\n")
        partial = Path(tmp) / archive.name
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            tar.add(top, arcname=name, filter=_normalized)
        os.replace(partial, archive)
    return archive


def _normalized(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owned by root, no build machine's user names in the archive."""
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


def describe(archive: Path) -> list[str]:
    """One line per file of a bundle (size, path), for the log and the README."""
    with tarfile.open(archive) as tar:
        return [f"{m.size:>10,}  {m.name}" for m in tar.getmembers() if m.isfile()]
