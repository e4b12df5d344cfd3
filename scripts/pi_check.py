#!/usr/bin/env python3
"""Raspberry Pi proof: the device bundle, installed on an emulated arm64 Debian, gives the x86 answers.

    .venv/bin/python scripts/pi_check.py [MODEL_DIR]        # MODEL_DIR defaults to exported/
    .venv/bin/python scripts/pi_check.py --preflight        # only: can this machine run the check at all?

What it does (as root, on an x86-64 Debian/Ubuntu host; the steps are in scripts/picheck/):

1. Installs `debootstrap` and `qemu-user-static` with apt-get when they are missing.
2. Builds an arm64 Debian bookworm root (the base of Raspberry Pi OS bookworm, Python 3.11) under
   build/pi-root/rootfs, once; later runs reuse it. Arm64 programs run under qemu-user through a
   binfmt_misc entry of a private user namespace, in a network namespace with nothing in it.
3. Makes the offline device bundle of MODEL_DIR (what `make bundle-offline` makes: the edge_runtime wheel,
   the release, install.sh and the aarch64 cp311 wheels of this venv's versions), copies it into the root
   and installs it there with its own install.sh (`--backend tflite,onnx`), with no network: a fresh venv
   in /opt/fashion-edge and /usr/local/bin/edge-classify, as on a Pi.
4. `edge-classify photo.jpg` (a test image drawn as a photo) in the root must answer its true label, as
   on x86. Then the first N (200) Fashion-MNIST test images, as 28x28 PNGs, go through the installed
   `edge-classify --json` (its default model, model_int8.tflite, and --model .../model_int8.onnx),
   emulated on a Cortex-A72 (Raspberry Pi 4/400/CM4) and a Cortex-A76 (Raspberry Pi 5), and through
   the repository's edge_runtime on x86 with MODEL_DIR's models. Every top-1 answer must be identical;
   a difference is named (image, both answers) and the exit code is 1.
5. Measures cold start and per-image latency inside the root (EMULATED: qemu on an x86 host, not device
   timings) and on the host, and writes everything to build/pi-root/last-run.json.

Exit codes: 0 all identical, 1 a difference or an error, 77 this machine cannot run the check at all
(not root, no apt-get to install qemu/debootstrap, no namespaces or binfmt_misc for them, not x86-64).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))               # pipeline.bundle.tarball, as `make bundle` runs it

from picheck.check import check  # noqa: E402 (after the path)
from picheck.common import EXIT_UNAVAILABLE, CheckError, Unavailable, log  # noqa: E402
from picheck.root import CPUS, SUITE, preflight  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402

DEFAULT_CPUS = "cortex-a72,cortex-a76"


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
            log("preflight ok: root, debootstrap, qemu-aarch64-static, namespaces and binfmt_misc for them")
            return 0
        return check(args)
    except Unavailable as e:
        log(f"UNAVAILABLE: {e}")
        return EXIT_UNAVAILABLE
    except (CheckError, PipelineError) as e:
        log(f"ERROR: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
