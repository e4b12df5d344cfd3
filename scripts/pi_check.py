#!/usr/bin/env python3
"""Raspberry Pi proof: edge_runtime on an emulated arm64 Debian gives the same top-1 answers as on x86.

    .venv/bin/python scripts/pi_check.py [MODEL_DIR]        # MODEL_DIR defaults to exported/
    .venv/bin/python scripts/pi_check.py --preflight        # only: can this machine run the check at all?

What it does (as root, on an x86-64 Debian/Ubuntu host):

1. Installs `debootstrap` and `qemu-user-static` with apt-get when they are missing.
2. Builds an arm64 Debian bookworm root (the base of Raspberry Pi OS bookworm, Python 3.11) under
   build/pi-root/rootfs, once; later runs reuse it. The mirror is the one this host's apt sources use
   (or debootstrap's own default), read at run time. `debootstrap --foreign` downloads the packages and
   unpacks the essential ones; the rest are unpacked the same way here, because the real second stage
   (`debootstrap --second-stage`, dpkg and the maintainer scripts) would need binfmt_misc to run arm64
   children, which a sandbox or container often lacks. No binfmt_misc is used at all: every arm64
   program is started as `chroot ROOT /usr/bin/qemu-aarch64-static PROGRAM`, in a private mount
   namespace that has /proc, /sys and a /proc/cpuinfo describing the emulated core mounted, so nothing
   is left mounted on the host when it ends.
3. Downloads the aarch64 wheels of numpy, pillow, ai-edge-litert and onnxruntime (the versions of this
   host's venv, so both sides run the same code) with pip on the host, and installs them offline into a
   venv inside the root with the root's own Python and pip (Debian's python3-pip-whl).
4. Copies edge_runtime/ into that venv and MODEL_DIR (the whole folder: manifest.json is needed) into the
   root, writes the first N (200) Fashion-MNIST test images as 28x28 mode "L" PNGs, and runs the device
   command line `python -m edge_runtime --json --model MODEL files...` for model_int8.tflite and
   model_int8.onnx: natively on the host, and emulated on a Cortex-A72 (Raspberry Pi 4/400/CM4) and a
   Cortex-A76 (Raspberry Pi 5). Every top-1 answer must be identical to the x86 one; a difference is
   named (image, both answers) and the exit code is 1.
5. Measures cold start and per-image latency inside the root (EMULATED: qemu on an x86 host, not device
   timings) and on the host, and writes everything to build/pi-root/last-run.json.

Exit codes: 0 all identical, 1 a difference or an error, 77 this machine cannot run the check at all
(not root, no apt-get to install qemu/debootstrap, no mount namespaces, not an x86-64 host).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXIT_UNAVAILABLE = 77
SUITE = "bookworm"
# What debootstrap puts in the root besides the minimal base: Python and its venv module.
INCLUDE = ["python3", "python3-venv"]
# The runtime's dependencies; pinned below to the host venv's versions when it has them.
PACKAGES = {"numpy": None, "pillow": None, "ai-edge-litert": "2.3.*", "onnxruntime": "1.32.*"}
MODELS = ["model_int8.tflite", "model_int8.onnx"]
GUEST = "/opt/pi-check"  # inside the root: images/, model/, wheels/ (only while installing)
GUEST_VENV = "/opt/venv"
QEMU = "qemu-aarch64-static"
DATA_DIRS = ["/usr/share/datasets/fashion-mnist"]

# Emulated cores. qemu's `-cpu` sets the instruction-set features (and so AT_HWCAP, which LiteRT/XNNPACK
# and onnxruntime use to pick their int8 kernels); the synthetic /proc/cpuinfo gives the same core's
# identity (MIDR fields), which the cpuinfo library inside both runtimes parses (without it, it fails to
# initialise, and parsing the host's x86 /proc/cpuinfo crashes it). Features lines as the Pi kernels
# print them.
CPUS = {
    "cortex-a72": {  # Raspberry Pi 4 / 400 / CM4: ARMv8.0-A, no dot product
        "boards": "Raspberry Pi 4/400/CM4",
        "features": "fp asimd evtstrm crc32 cpuid",
        "variant": "0x0", "part": "0xd08", "revision": "3",
    },
    "cortex-a76": {  # Raspberry Pi 5 / CM5: ARMv8.2-A with dot product
        "boards": "Raspberry Pi 5/CM5",
        "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                    "dcpop asimddp",
        "variant": "0x4", "part": "0xd0b", "revision": "1",
    },
    "cortex-a53": {  # Raspberry Pi 3 / Zero 2 W: ARMv8.0-A (not run by default)
        "boards": "Raspberry Pi 3/Zero 2 W",
        "features": "fp asimd evtstrm crc32 cpuid",
        "variant": "0x0", "part": "0xd03", "revision": "4",
    },
}
DEFAULT_CPUS = "cortex-a72,cortex-a76"


class Unavailable(Exception):
    """This machine cannot run the check at all."""


class CheckError(Exception):
    """The check ran and failed, or a step of it failed."""


def log(msg: str) -> None:
    print(f"pi-check: {msg}", flush=True)


def run(cmd: list[str], *, log_to: Path | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a host command; with log_to, its output goes to that file and its tail is shown on failure."""
    if log_to is None:
        res = subprocess.run(cmd, text=True, capture_output=True, **kw)
        output = (res.stdout or "") + (res.stderr or "")
    else:
        with log_to.open("a") as f:
            f.write(f"$ {shlex.join(cmd)}\n")
            f.flush()
            res = subprocess.run(cmd, text=True, stdout=f, stderr=subprocess.STDOUT, **kw)
        output = log_to.read_text(errors="replace")
    if check and res.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise CheckError(f"command failed (exit {res.returncode}): {shlex.join(cmd)}\n{tail}")
    return res


# ---------------------------------------------------------------------------------------------- preflight

def apt_install(packages: list[str]) -> None:
    if not shutil.which("apt-get"):
        raise Unavailable(f"{', '.join(packages)} missing and there is no apt-get to install them")
    log(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        res = subprocess.run(cmd, text=True, capture_output=True, env=env)
        if res.returncode != 0:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-5:])
            raise Unavailable(f"`{shlex.join(cmd)}` failed (exit {res.returncode}):\n{tail}")


def preflight() -> None:
    """Raise Unavailable unless this machine can build and run an emulated arm64 root."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        raise Unavailable(f"host is {machine}; this check emulates arm64 on an x86-64 host")
    if os.geteuid() != 0:
        raise Unavailable("needs root (apt-get, debootstrap, chroot, mount namespace); run it as root")
    missing = [pkg for tool, pkg in (("debootstrap", "debootstrap"), (QEMU, "qemu-user-static"))
               if not shutil.which(tool)]
    if missing:
        apt_install(missing + (["debian-archive-keyring"] if "debootstrap" in missing else []))
    for tool in ("debootstrap", QEMU, "chroot", "unshare", "mount", "dpkg-deb", "tar"):
        if not shutil.which(tool):
            raise Unavailable(f"`{tool}` is not available on this machine")
    res = subprocess.run([QEMU, "--version"], text=True, capture_output=True)
    if res.returncode != 0:
        raise Unavailable(f"`{QEMU} --version` does not run (exit {res.returncode}): {res.stderr.strip()}")
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], text=True, capture_output=True)
    if res.returncode != 0:
        raise Unavailable(f"cannot create a private mount namespace (unshare --mount): {res.stderr.strip()}")


# ---------------------------------------------------------------------------------------------- the mirror

def _deb822_entries(text: str):
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield fields.get("types", "").split(), uri, fields.get("suites", "").split(), \
                fields.get("components", "").split()


def _one_line_entries(text: str):
    for line in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(line) >= 4 and line[0] in ("deb", "deb-src"):
            yield [line[0]], line[1], [line[2]], line[3:]


def host_mirror() -> str | None:
    """The Debian archive this host's apt uses, or None for debootstrap's own default.

    PI_CHECK_MIRROR overrides. Only a Debian host's sources are used (an Ubuntu mirror has no bookworm).
    """
    if os.environ.get("PI_CHECK_MIRROR"):
        return os.environ["PI_CHECK_MIRROR"]
    try:
        os_release = Path("/etc/os-release").read_text()
    except OSError:
        return None
    if not re.search(r"^ID=\"?debian\"?$", os_release, re.M):
        return None
    apt = Path("/etc/apt")
    files = [(p, _one_line_entries) for p in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]]
    files += [(p, _deb822_entries) for p in sorted(apt.glob("sources.list.d/*.sources"))]
    for path, parse in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for types, uri, suites, components in parse(text):
            main_suite = [s for s in suites if "-" not in s and "/" not in s]
            if "deb" in types and main_suite and "main" in components and re.match(r"https?://", uri):
                return uri
    return None


# ---------------------------------------------------------------------------------------------- the root

class Root:
    """The cached arm64 Debian root and how to run programs in it."""

    def __init__(self, cache: Path, suite: str) -> None:
        self.cache = cache
        self.suite = suite
        self.path = cache / "rootfs"
        self.partial = cache / "rootfs.partial"
        self.stamp = self.path / GUEST.lstrip("/") / "root.json"
        self.log_file = cache / "build.log"

    # -- building

    def ready(self) -> bool:
        return self.stamp.is_file()

    def _assert_unmounted(self, path: Path) -> None:
        prefix = str(path.resolve()) + "/"
        with open("/proc/self/mounts") as f:
            busy = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
        if busy:
            raise CheckError(f"{path} still has mounts ({', '.join(busy)}); unmount them before rebuilding")

    def remove(self) -> None:
        for path in (self.partial, self.path):
            if path.exists() or path.is_symlink():
                self._assert_unmounted(path)
                shutil.rmtree(path)

    def build(self, mirror: str | None) -> None:
        self.remove()
        self.cache.mkdir(parents=True, exist_ok=True)
        self.log_file.write_text("")
        target = self.partial
        cmd = ["debootstrap", "--arch", "arm64", "--foreign", "--variant=minbase",
               f"--include={','.join(INCLUDE)}", self.suite, str(target)]
        if mirror:
            cmd.append(mirror)
        log(f"debootstrap (first stage) arm64 {self.suite} from {mirror or 'debootstrap default mirror'}"
            f" (log: {self.log_file.relative_to(REPO) if self.log_file.is_relative_to(REPO) else self.log_file})")
        t = time.monotonic()
        run(cmd, log_to=self.log_file)
        log(f"  first stage done in {time.monotonic() - t:.0f} s")

        # debootstrap --foreign unpacked the "required" packages; unpack the rest ("base": Python, the
        # --include list and their dependencies) the same way debootstrap does (merged /usr: keep the
        # /bin -> usr/bin symlinks). Maintainer scripts are not run (they need arm64 children).
        t = time.monotonic()
        state = target / "debootstrap"
        debpaths = dict(line.split(None, 1) for line in (state / "debpaths").read_text().splitlines() if line)
        base = (state / "base").read_text().split()
        for pkg in base:
            deb = target / debpaths[pkg].strip().lstrip("/")
            with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
                tar = subprocess.run(["tar", "-C", str(target), "--keep-directory-symlink", "-xf", "-"],
                                     stdin=p.stdout, capture_output=True, text=True)
            if p.returncode != 0 or tar.returncode != 0:
                raise CheckError(f"unpacking {deb.name} failed: {tar.stderr.strip()}")
        log(f"  unpacked {len(base)} more packages in {time.monotonic() - t:.0f} s")

        # debootstrap makes /proc a symlink to the host's /proc when it believes it runs in a container;
        # the root needs a directory to mount its own procfs on.
        proc = target / "proc"
        if proc.is_symlink():
            proc.unlink()
        proc.mkdir(exist_ok=True)
        (target / "sys").mkdir(exist_ok=True)
        shutil.copy2(shutil.which(QEMU), target / "usr/bin" / QEMU)
        self._ca_bundle(target)
        (target / GUEST.lstrip("/")).mkdir(parents=True, exist_ok=True)

        info = self._probe(target)
        if info["machine"] != "aarch64":
            raise CheckError(f"the root's python3 reports machine {info['machine']!r}, expected 'aarch64'")
        info.update(suite=self.suite, mirror=mirror or "debootstrap default", built=time.strftime("%Y-%m-%d %H:%M:%S"))
        (target / GUEST.lstrip("/") / "root.json").write_text(json.dumps(info, indent=1) + "\n")
        target.rename(self.path)

    @staticmethod
    def _ca_bundle(target: Path) -> None:
        """pip (Debian's) builds an SSL context from /etc/ssl/certs/ca-certificates.crt at import, even
        offline; update-ca-certificates (a maintainer script) did not run, so make the bundle the way it
        does, from the root's own certificates."""
        bundle = target / "etc/ssl/certs/ca-certificates.crt"
        if bundle.exists():
            return
        certs = sorted((target / "usr/share/ca-certificates").rglob("*.crt"))
        bundle.parent.mkdir(parents=True, exist_ok=True)
        if certs:
            bundle.write_text("".join(c.read_text() for c in certs))
        elif Path("/etc/ssl/certs/ca-certificates.crt").is_file():
            shutil.copy2("/etc/ssl/certs/ca-certificates.crt", bundle)

    def refresh_qemu(self) -> None:
        """The root carries a copy of the host's qemu-aarch64-static: keep it the host's current one."""
        host, copy = Path(shutil.which(QEMU)), self.path / "usr/bin" / QEMU
        if not copy.is_file() or copy.read_bytes() != host.read_bytes():
            shutil.copy2(host, copy)

    def info(self) -> dict:
        return json.loads(self.stamp.read_text())

    # -- running

    def command(self, argv: list[str], cpu: str = "cortex-a72", root: Path | None = None) -> list[str]:
        """Host argv that runs the arm64 `argv` in the root on the emulated `cpu`.

        A private mount namespace gets the root's /proc, /sys and the synthetic /proc/cpuinfo; they go away
        with it. The environment is a clean one (the host's PIP_*/PYTHON* settings stay out).
        """
        root = root or self.path
        cpuinfo = self.cache / f"cpuinfo-{cpu}"
        cpuinfo.write_text(synthetic_cpuinfo(cpu))
        r = shlex.quote(str(root))
        setup = (f"mount -t proc proc {r}/proc && mount -t sysfs sysfs {r}/sys && "
                 f"mount --bind {shlex.quote(str(cpuinfo))} {r}/proc/cpuinfo && ")
        env = [shutil.which("env") or "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root",
               "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1"]
        inner = [*env, shutil.which("chroot") or "/usr/sbin/chroot", str(root), f"/usr/bin/{QEMU}", "-cpu", cpu, *argv]
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", setup + "exec " + shlex.join(inner)]

    def _probe(self, root: Path) -> dict:
        code = ("import json, platform, sys; print(json.dumps({'python': platform.python_version(), "
                "'machine': platform.machine(), 'libc': platform.libc_ver()[1], "
                "'debian': open('/etc/debian_version').read().strip()}))")
        res = run(self.command(["/usr/bin/python3", "-c", code], root=root))
        return json.loads(res.stdout.strip().splitlines()[-1])


def synthetic_cpuinfo(cpu: str) -> str:
    """/proc/cpuinfo as an arm64 Linux kernel prints it, one entry per host CPU (matching /sys)."""
    spec = CPUS[cpu]
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(n, os.cpu_count() or 1)
    entry = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n")
    return "".join(entry.format(i=i, **spec) for i in range(n))


# ---------------------------------------------------------------------------------------------- the venv

def host_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def requirements() -> list[str]:
    """Same versions as the host venv (both sides run the same code); the project's ranges otherwise."""
    have = host_versions()
    reqs = []
    for name, spec in PACKAGES.items():
        if name in have:
            reqs.append(f"{name}=={have[name]}")
        else:
            reqs.append(f"{name}=={spec}" if spec else name)
    return reqs


def platform_tags(glibc: str) -> list[str]:
    """pip --platform matches tags exactly: list every manylinux tag up to the root's glibc."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = ["manylinux2014_aarch64"] + [f"manylinux_{major}_{m}_aarch64" for m in range(17, minor + 1)]
    return [arg for tag in tags for arg in ("--platform", tag)]


def ensure_venv(root: Root) -> bool:
    """The venv /opt/venv in the root with the aarch64 wheels; returns True if it was (re)built."""
    info = root.info()
    pyver = ".".join(info["python"].split(".")[:2])
    reqs = requirements()
    stamp = root.path / GUEST_VENV.lstrip("/") / "pi-check-requirements.txt"
    wanted = "\n".join(reqs) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        return False
    wheels = root.cache / f"wheels-cp{pyver.replace('.', '')}"
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"downloading aarch64 wheels for Python {pyver} (glibc {info['libc']}): {' '.join(reqs)}")
    t = time.monotonic()
    run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(wheels),
         "--only-binary=:all:", "--python-version", pyver, *platform_tags(info["libc"]), *reqs],
        log_to=root.log_file)
    log(f"  downloaded in {time.monotonic() - t:.0f} s")

    guest_wheels = root.path / GUEST.lstrip("/") / "wheels"
    shutil.rmtree(guest_wheels, ignore_errors=True)
    shutil.copytree(wheels, guest_wheels)
    venv = root.path / GUEST_VENV.lstrip("/")
    shutil.rmtree(venv, ignore_errors=True)
    t = time.monotonic()
    # `python3 -m venv` would run ensurepip as an arm64 child process (needs binfmt_misc): make the venv
    # without pip and install with the pip wheel Debian ships (python3-pip-whl), offline.
    run(root.command(["/usr/bin/python3", "-m", "venv", "--without-pip", GUEST_VENV]), log_to=root.log_file)
    pips = sorted((root.path / "usr/share/python-wheels").glob("pip-*.whl"))
    if not pips:
        raise CheckError("the root has no /usr/share/python-wheels/pip-*.whl (python3-pip-whl)")
    pip = f"/usr/share/python-wheels/{pips[-1].name}/pip"
    log(f"installing the wheels into {GUEST_VENV} inside the root (pip under emulation)")
    run(root.command([f"{GUEST_VENV}/bin/python", pip, "install", "-q", "--no-index", "--no-cache-dir",
                      "--disable-pip-version-check", "--find-links", f"{GUEST}/wheels", *reqs]),
        log_to=root.log_file)
    shutil.rmtree(guest_wheels)
    stamp.write_text(wanted)
    log(f"  installed in {time.monotonic() - t:.0f} s")
    return True


def guest_site_packages(root: Root) -> Path:
    found = sorted((root.path / GUEST_VENV.lstrip("/") / "lib").glob("python3.*/site-packages"))
    if not found:
        raise CheckError(f"no site-packages in {GUEST_VENV} inside the root")
    return found[0]


# ---------------------------------------------------------------------------------------------- the payload

def find_data_dir(explicit: str | None) -> Path:
    candidates = [explicit] if explicit else [os.environ.get("FASHION_MNIST_DIR"), *DATA_DIRS]
    for d in candidates:
        if d and (Path(d) / "t10k-images-idx3-ubyte.gz").is_file() and (Path(d) / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(d)
    raise CheckError("Fashion-MNIST test set not found (t10k-*-ubyte.gz in $FASHION_MNIST_DIR or "
                     f"{DATA_DIRS[0]}): run `make data` (Debian package dataset-fashion-mnist)")


def read_test_set(data_dir: Path, n: int):
    import numpy as np

    with gzip.open(data_dir / "t10k-images-idx3-ubyte.gz", "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051 or (rows, cols) != (28, 28):
            raise CheckError(f"{data_dir}/t10k-images-idx3-ubyte.gz: not an IDX image file (magic {magic})")
        images = np.frombuffer(f.read(min(n, count) * 784), np.uint8).reshape(-1, 28, 28)
    with gzip.open(data_dir / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        magic, count = struct.unpack(">II", f.read(8))
        if magic != 2049:
            raise CheckError(f"{data_dir}/t10k-labels-idx1-ubyte.gz: not an IDX label file (magic {magic})")
        labels = np.frombuffer(f.read(min(n, count)), np.uint8)
    return images, labels


def write_pngs(images, out_dir: Path) -> list[str]:
    from PIL import Image

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    names = []
    for i, img in enumerate(images):
        im = Image.fromarray(img)
        assert im.mode == "L" and im.size == (28, 28)
        name = f"t10k_{i:05d}.png"
        im.save(out_dir / name)
        names.append(name)
    return names


def stage_payload(root: Root, model_dir: Path) -> None:
    """edge_runtime/ into the root's venv, the model folder into /opt/pi-check/model (fresh every run)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest = guest_site_packages(root) / "edge_runtime"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(REPO / "edge_runtime", dest, ignore=ignore)
    model = root.path / GUEST.lstrip("/") / "model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(model_dir, model, ignore=ignore)


# ---------------------------------------------------------------------------------------------- running

def parse_json_lines(text: str, what: str) -> dict[str, dict]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if "top_k" not in obj or not obj["top_k"]:
            raise CheckError(f"{what}: a result line without top_k: {line}")
        out[Path(obj["path"]).name] = obj["top_k"][0]
    return out


def classify_cli(cmd: list[str], what: str, expected: int, cwd: Path | None = None) -> tuple[dict, float]:
    t = time.monotonic()
    res = subprocess.run(cmd, text=True, capture_output=True, cwd=cwd)
    wall = time.monotonic() - t
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise CheckError(f"{what}: `python -m edge_runtime --json` exited {res.returncode}\n{tail}")
    results = parse_json_lines(res.stdout, what)
    if len(results) != expected:
        raise CheckError(f"{what}: {len(results)} results for {expected} images\n{res.stderr[-2000:]}")
    return results, wall


# Run inside the root (and on the host for reference): cold start and per-image latency through the API.
TIMING_SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
from edge_runtime.classifier import Classifier
t1 = time.perf_counter()
model, files = sys.argv[1], sys.argv[2:]
clf = Classifier(model, num_threads=1)
t2 = time.perf_counter()
clf.classify(files[0], top_k=1)
t3 = time.perf_counter()
first_done = time.time()
lat = []
for f in files:
    s = time.perf_counter()
    clf.classify(f, top_k=1)
    lat.append(time.perf_counter() - s)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_s": t3 - t2, "first_done": first_done,
                  "lat_s": lat}))
"""


def timing(cmd: list[str], what: str, cwd: Path | None = None) -> dict:
    spawn = time.time()
    res = subprocess.run(cmd, text=True, capture_output=True, cwd=cwd)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise CheckError(f"{what}: timing run exited {res.returncode}\n{tail}")
    d = json.loads(res.stdout.strip().splitlines()[-1])
    lat = sorted(x * 1000 for x in d.pop("lat_s"))
    return {
        "cold_start_s": round(d["first_done"] - spawn, 3),  # process start -> first answer
        "import_s": round(d["import_s"], 3), "load_s": round(d["load_s"], 3), "first_s": round(d["first_s"], 3),
        "per_image_ms_median": round(statistics.median(lat), 2),
        "per_image_ms_p90": round(lat[int(0.9 * (len(lat) - 1))], 2),
        "images": len(lat),
    }


def guest_versions(root: Root) -> dict:
    code = ("import importlib.metadata as m, json, platform; print(json.dumps({'python': platform.python_version(), "
            "'machine': platform.machine(), **{n: m.version(n) for n in %r}}))" % list(PACKAGES))
    res = run(root.command([f"{GUEST_VENV}/bin/python", "-c", code]))
    return json.loads(res.stdout.strip().splitlines()[-1])


def check(args) -> int:
    start = time.monotonic()
    model_dir = Path(args.model_dir).resolve()
    models = [model_dir / m for m in MODELS]
    missing = [name for name in (*MODELS, "manifest.json") if not (model_dir / name).is_file()]
    if missing:
        raise CheckError(f"{model_dir}: missing {', '.join(missing)} "
                         "(run `make export`, or pass the model folder as the argument)")
    cpus = [c.strip() for c in args.cpus.split(",") if c.strip()]
    unknown = [c for c in cpus if c not in CPUS]
    if unknown:
        raise CheckError(f"unknown --cpus {', '.join(unknown)}; known: {', '.join(CPUS)}")
    data_dir = find_data_dir(args.data_dir)

    preflight()
    cache = Path(args.cache).resolve()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = Root(cache, args.suite)
        built = False
        if root.ready() and root.info().get("suite") != args.suite:
            log(f"the cached root is {root.info().get('suite')}, not {args.suite}: rebuilding")
            args.rebuild = True
        if args.rebuild or not root.ready():
            root.build(host_mirror())
            built = True
        else:
            log(f"reusing the arm64 root {root.path} (built {root.info().get('built')}; --rebuild to redo)")
            root.refresh_qemu()
        venv_built = ensure_venv(root)
        setup_s = time.monotonic() - start
        stage_payload(root, model_dir)

        images, labels = read_test_set(data_dir, args.images)
        img_dir = root.path / GUEST.lstrip("/") / "images"
        names = write_pngs(images, img_dir)
        truth = {n: int(l) for n, l in zip(names, labels)}
        host_files = [str(img_dir / n) for n in names]
        guest_files = [f"{GUEST}/images/{n}" for n in names]

        versions = guest_versions(root)
        info = root.info()
        log(f"arm64 root: Debian {info['debian']} ({root.suite}), Python {versions['python']} "
            f"({versions['machine']}, glibc {info['libc']})")
        log("arm64 wheels: " + ", ".join(f"{n} {versions[n]}" for n in PACKAGES))
        host_v = host_versions()
        log(f"x86 host: Python {platform.python_version()}, " + ", ".join(f"{n} {host_v.get(n, '-')}" for n in PACKAGES))

        report = {"arm64": versions, "root": info, "host": {"python": platform.python_version(), **host_v},
                  "images": len(names), "cpus": cpus, "models": {}, "root_built_this_run": built,
                  "venv_built_this_run": venv_built}
        diffs = []
        for model in models:
            entry = report["models"][model.name] = {}
            x86, wall = classify_cli([sys.executable, "-m", "edge_runtime", "--json", "--top-k", "1", "--threads", "1",
                                      "--model", str(model), *host_files],
                                     f"x86 {model.name}", len(names), cwd=REPO)
            acc = sum(x86[n]["index"] == truth[n] for n in names) / len(names)
            entry["x86"] = {"cli_wall_s": round(wall, 2), "accuracy": acc}
            log(f"{model.name}: x86 native   {len(names)} images, CLI {wall:5.1f} s, accuracy {acc:.1%}")
            for cpu in cpus:
                guest_model = f"{GUEST}/model/{model.name}"
                arm, wall = classify_cli(
                    root.command([f"{GUEST_VENV}/bin/python", "-m", "edge_runtime", "--json", "--top-k", "1",
                                  "--threads", "1", "--model", guest_model, *guest_files], cpu=cpu),
                    f"arm64 {cpu} {model.name}", len(names))
                bad = [(n, x86[n], arm[n]) for n in names
                       if (x86[n]["index"], x86[n]["label"]) != (arm[n]["index"], arm[n]["label"])]
                max_dscore = max(abs(float(x86[n]["score"]) - float(arm[n]["score"])) for n in names)
                entry[cpu] = {"cli_wall_s": round(wall, 2), "top1_differences": len(bad),
                              "max_top1_score_difference": round(max_dscore, 6)}
                log(f"{model.name}: arm64 {cpu:<10} CLI {wall:5.1f} s (emulated), top-1 differences vs x86: "
                    f"{len(bad)}/{len(names)}, max |score diff| {max_dscore:.2g}")
                for n, a, b in bad:
                    diffs.append(f"MISMATCH {model.name} {n} (true class {truth[n]}): x86 {a['label']} ({a['index']}, "
                                 f"{float(a['score']):.4f}) != arm64 {cpu} {b['label']} ({b['index']}, {float(b['score']):.4f})")

        if not args.no_timing:
            log("latency through the API (num_threads=1, one image per call, PNG decode included):")
            timing_files = host_files[: args.timing_images]
            guest_timing = guest_files[: args.timing_images]
            for model in models:
                t = timing([sys.executable, "-c", TIMING_SNIPPET, str(model), *timing_files],
                           f"x86 {model.name}", cwd=REPO)
                report["models"][model.name]["x86"]["timing"] = t
                log(f"  {model.name:<18} x86 native (this host)     cold start {t['cold_start_s']:6.2f} s, "
                    f"per image median {t['per_image_ms_median']:7.2f} ms, p90 {t['per_image_ms_p90']:7.2f} ms")
                for cpu in cpus:
                    t = timing(root.command([f"{GUEST_VENV}/bin/python", "-c", TIMING_SNIPPET,
                                             f"{GUEST}/model/{model.name}", *guest_timing], cpu=cpu),
                               f"arm64 {cpu} {model.name}")
                    report["models"][model.name][cpu]["timing_emulated"] = t
                    log(f"  {model.name:<18} arm64 {cpu} EMULATED  cold start {t['cold_start_s']:6.2f} s, "
                        f"per image median {t['per_image_ms_median']:7.2f} ms, p90 {t['per_image_ms_p90']:7.2f} ms")
            log("  (EMULATED = qemu-user on this x86 host: shows the code runs, not how fast a Pi is)")

        wall = time.monotonic() - start
        report.update(wall_s=round(wall, 1), setup_s=round(setup_s, 1), ok=not diffs, differences=diffs)
        (cache / "last-run.json").write_text(json.dumps(report, indent=1) + "\n")
        for line in diffs:
            print(line, flush=True)
        state = "root built this run" if built else ("venv rebuilt this run" if venv_built else "cached root")
        log(f"wall time {wall:.0f} s ({state}; setup {setup_s:.0f} s); report: {cache / 'last-run.json'}")
        if diffs:
            log(f"FAIL: {len(diffs)} top-1 answer(s) differ between x86 and emulated arm64")
            return 1
        log(f"OK: all {len(names)} top-1 answers identical on x86 and arm64 ({', '.join(cpus)}) "
            f"for {', '.join(MODELS)}")
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", nargs="?", default=str(REPO / "exported"),
                   help="folder with model_int8.tflite, model_int8.onnx and manifest.json (default: exported/)")
    p.add_argument("--cache", default=str(REPO / "build" / "pi-root"), help="where the root is kept (default: build/pi-root)")
    p.add_argument("--suite", default=SUITE, help="Debian suite of the root (default: bookworm, Python 3.11)")
    p.add_argument("--cpus", default=DEFAULT_CPUS, help=f"emulated cores, comma-separated (default: {DEFAULT_CPUS}; "
                   f"known: {', '.join(CPUS)})")
    p.add_argument("--images", type=int, default=200, help="how many test images (default: 200)")
    p.add_argument("--timing-images", type=int, default=50, help="images for the per-image latency (default: 50)")
    p.add_argument("--no-timing", action="store_true", help="skip the latency measurements")
    p.add_argument("--data-dir", help="folder with t10k-*-ubyte.gz (default: $FASHION_MNIST_DIR or Debian's)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the root even if it is cached")
    p.add_argument("--preflight", action="store_true",
                   help=f"only check that this machine can run the check (exit 0, or {EXIT_UNAVAILABLE} with the reason)")
    args = p.parse_args(argv)
    try:
        if args.preflight:
            preflight()
            log("preflight ok: root, debootstrap, qemu-aarch64-static, mount namespaces")
            return 0
        return check(args)
    except Unavailable as e:
        log(f"UNAVAILABLE: {e}")
        return EXIT_UNAVAILABLE
    except CheckError as e:
        log(f"ERROR: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
