"""The arm64 Debian root of pi-check: can this machine run it, building it once, and running programs in it.

debootstrap --foreign downloads an arm64 bookworm (the base of Raspberry Pi OS bookworm, Python 3.11) and
unpacks the essential packages; the rest are unpacked the same way here, because the real second stage
would run arm64 maintainer scripts. Every arm64 program runs under qemu-user through a binfmt_misc entry
registered in a private instance (a user namespace of its own: Linux 6.7 and later), so that programs it
starts (install.sh, pip, venv's ensurepip) are emulated too, and nothing is registered or left mounted on
the host. The namespace also has its own network with nothing in it: no program in the root reaches any
network. A host whose kernel has no private instance can use the host's own qemu-aarch64 entry (Debian's
qemu-user-static registers one with systemd-binfmt).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from .common import GUEST, REPO, CheckError, Unavailable, log, run

SUITE = "bookworm"
# What debootstrap puts in the root besides the minimal base: Python and its venv module.
INCLUDE = ["python3", "python3-venv"]
QEMU = "qemu-aarch64-static"
HOST_BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
# The aarch64 ELF header, as Debian's qemu-user-static registers it. F: qemu is opened now, from the
# host's path, so the root needs no copy of it.
BINFMT_ENTRY = (r":qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:"
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:{qemu}:F")


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
    binfmt_mode()


def binfmt_mode() -> str:
    """'private' (a binfmt_misc instance of our own user namespace), 'host' (the host's qemu-aarch64 entry);
    Unavailable when neither can run arm64 children."""
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--net", "sh", "-c",
                            "d=$(mktemp -d) && mount -t binfmt_misc binfmt_misc \"$d\" && umount \"$d\"; s=$?; rmdir \"$d\"; exit $s"],
                           text=True, capture_output=True)
    if probe.returncode == 0:
        return "private"
    if HOST_BINFMT.is_file() and HOST_BINFMT.read_text().startswith("enabled") and "flags: F" in HOST_BINFMT.read_text():
        return "host"
    raise Unavailable("cannot run arm64 programs that start others: this kernel has no binfmt_misc for user "
                      f"namespaces (Linux 6.7+) and the host registers no {HOST_BINFMT.name} entry with the F flag "
                      f"({probe.stderr.strip() or 'unshare failed'})")




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



class Root:
    """The cached arm64 Debian root and how to run programs in it."""

    def __init__(self, cache: Path, suite: str, binfmt: str = "private") -> None:
        self.cache = cache
        self.suite = suite
        self.binfmt = binfmt        # binfmt_mode()
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

    def info(self) -> dict:
        return json.loads(self.stamp.read_text())

    # -- running

    def command(self, argv: list[str], cpu: str = "cortex-a72", root: Path | None = None) -> list[str]:
        """Host argv that runs the arm64 `argv` in the root on the emulated `cpu`, with no network.

        New namespaces (user, mount, pid, network) get the private binfmt_misc entry for qemu, the root's
        /proc and /sys and the synthetic /proc/cpuinfo; they all go away with it. QEMU_CPU reaches every
        emulated child. The environment is a clean one (the host's PIP_*/PYTHON* settings stay out).
        """
        root = root or self.path
        cpuinfo = self.cache / f"cpuinfo-{cpu}"
        cpuinfo.write_text(synthetic_cpuinfo(cpu))
        r = shlex.quote(str(root))
        setup = ""
        if self.binfmt == "private":
            mnt = self.cache / "binfmt"
            mnt.mkdir(exist_ok=True)
            entry = BINFMT_ENTRY.format(qemu=shutil.which(QEMU))
            setup = (f"mount -t binfmt_misc binfmt_misc {shlex.quote(str(mnt))} && "
                     f"printf '%s' {shlex.quote(entry)} > {shlex.quote(str(mnt / 'register'))} && ")
            namespaces = ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net"]
        else:
            namespaces = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--net"]
        setup += (f"mount -t proc proc {r}/proc && mount -t sysfs sysfs {r}/sys && "
                  f"mount --bind {shlex.quote(str(cpuinfo))} {r}/proc/cpuinfo && ")
        env = [shutil.which("env") or "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root",
               "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1", f"QEMU_CPU={cpu}"]
        inner = [*env, shutil.which("chroot") or "/usr/sbin/chroot", str(root), *argv]
        return [*namespaces, "--", "sh", "-c", setup + "exec " + shlex.join(inner)]

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

