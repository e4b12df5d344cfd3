"""The steps of `make pi-check` (scripts/pi_check.py is its command line):

    root.py     the arm64 Debian root: preflight, debootstrap, running programs in it under qemu-user
    install.py  the offline device bundle (pipeline.bundle.tarball), installed in the root with no network
    compare.py  test images, the installed edge-classify in the root against x86, timing
    report.py   versions, the summary lines and build/pi-root/last-run.json

The aarch64 wheels are fetched by pipeline.bundle.wheels, as for `make bundle-offline`.
"""
