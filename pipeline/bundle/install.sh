#!/bin/sh
# fashion-edge device install (the install.sh of `make bundle`): a venv with edge_runtime and one backend,
# the bundled release as edge-classify's default model, edge-classify on the PATH, and on request a systemd
# service for the live view. Run ./install.sh --help. POSIX sh: Raspberry Pi OS's /bin/sh is dash.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
BACKEND=tflite
PREFIX=
BIN_DIR=
OPENCV=0
HEIC=0
PICAMERA=0
SERVICE=0
CAMERA=0
LISTEN=0.0.0.0:8080
THRESHOLD=
UNIT_DIR=
UNIT_NAME=fashion-edge.service

usage() {
    cat <<'EOF'
usage: ./install.sh [options]

Installs edge-classify with the release in this bundle as its default model.
As root: into /opt/fashion-edge, with /usr/local/bin/edge-classify.
Otherwise: into ~/.local/share/fashion-edge, with ~/.local/bin/edge-classify.
With a wheels/ folder (the offline bundle) nothing is downloaded.

  --backend B        tflite (LiteRT, the default), onnx (onnxruntime) or tflite,onnx (both; the first
                     one's model is the default)
  --opencv           also OpenCV, for USB cameras, video files and stream URLs (--camera 0)
  --heic             also pillow-heif, for HEIC/HEIF photos (an iPhone's default), when the bundle has it
  --picamera         a venv that sees apt's python3-picamera2 (sudo apt install python3-picamera2 first),
                     for the Raspberry Pi camera (--camera picamera)
  --prefix DIR       install there instead
  --bin-dir DIR      put the edge-classify command there instead
  --service          also a systemd service, started now and at every boot (needs root):
                     edge-classify --camera SOURCE --serve HOST:PORT [--threshold P], as a dynamic
                     user of its own (not root) in the video group, restarted when it fails; the
                     token of the page is made once and kept in PREFIX/service.env
  --camera SOURCE    the service's camera (default 0; picamera for the Pi camera)
  --listen HOST:PORT the service's address (default 0.0.0.0:8080: the network, with a token)
  --threshold P      the service answers "unsure" below P (the live page shows the flag to paste)
  --unit-dir DIR     write the unit there and start nothing (to review it, or for tests)
  -h, --help         this text

Afterwards: edge-classify photo.jpg    (and edge-classify --help)
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --backend) BACKEND=${2:?--backend needs a value}; shift 2 ;;
        --opencv) OPENCV=1; shift ;;
        --heic) HEIC=1; shift ;;
        --picamera) PICAMERA=1; shift ;;
        --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
        --bin-dir) BIN_DIR=${2:?--bin-dir needs a folder}; shift 2 ;;
        --service) SERVICE=1; shift ;;
        --camera) CAMERA=${2:?--camera needs a source}; shift 2 ;;
        --listen) LISTEN=${2:?--listen needs HOST:PORT}; shift 2 ;;
        --threshold) THRESHOLD=${2:?--threshold needs a number}; shift 2 ;;
        --unit-dir) UNIT_DIR=${2:?--unit-dir needs a folder}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

case "$BACKEND" in
    tflite) EXTRAS=tflite; MODEL=model_int8.tflite ;;
    onnx) EXTRAS=onnx; MODEL=model_int8.onnx ;;
    tflite,onnx) EXTRAS=tflite,onnx; MODEL=model_int8.tflite ;;
    onnx,tflite) EXTRAS=onnx,tflite; MODEL=model_int8.onnx ;;
    *) die "--backend $BACKEND: expected tflite, onnx or tflite,onnx" ;;
esac
if [ "$SERVICE" = 1 ]; then
    if [ "$CAMERA" = picamera ]; then PICAMERA=1; else OPENCV=1; fi
    if [ -z "$UNIT_DIR" ] && [ "$(id -u)" != 0 ]; then
        die "--service writes /etc/systemd/system/$UNIT_NAME: run it with sudo"
    fi
    case "$LISTEN" in *:[0-9]*) ;; *) die "--listen $LISTEN: expected HOST:PORT, e.g. 0.0.0.0:8080" ;; esac
fi
[ "$OPENCV" = 1 ] && EXTRAS="$EXTRAS,camera"
[ "$HEIC" = 1 ] && EXTRAS="$EXTRAS,heic"

if [ "$(id -u)" = 0 ]; then
    PREFIX=${PREFIX:-/opt/fashion-edge}; BIN_DIR=${BIN_DIR:-/usr/local/bin}
else
    PREFIX=${PREFIX:-$HOME/.local/share/fashion-edge}; BIN_DIR=${BIN_DIR:-$HOME/.local/bin}
fi
case "$PREFIX" in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
case "$BIN_DIR" in /*) ;; *) BIN_DIR=$(pwd)/$BIN_DIR ;; esac
# The paths go into a shell script and a systemd unit as they are.
case "$PREFIX$BIN_DIR" in *[!A-Za-z0-9._/+@-]*) die "--prefix/--bin-dir: use a path without spaces or quotes" ;; esac

WHEEL=$(ls "$HERE"/fashion_edge_runtime-*.whl 2>/dev/null | head -n 1)
[ -n "$WHEEL" ] && [ -d "$HERE/release" ] || die "$HERE is not a fashion-edge bundle (no fashion_edge_runtime-*.whl or release/)"
[ -f "$HERE/release/$MODEL" ] || die "$HERE/release/$MODEL is missing"

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: sudo apt install python3 python3-venv"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" -V 2>&1) is too old: edge_runtime needs Python 3.11 or newer (Raspberry Pi OS bookworm or later)"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || die "the venv module is missing: sudo apt install python3-venv"

PIP_SOURCE=
if [ -d "$HERE/wheels" ]; then
    # An offline bundle holds the wheels of one machine and Python: say so plainly rather than let pip fail.
    "$PYTHON" - "$HERE/BUNDLE.json" "$EXTRAS" <<'EOF' || exit 2
import json, platform, sys
w = json.load(open(sys.argv[1]))["wheels"]
have = (platform.machine(), "%d.%d" % sys.version_info[:2])
if have != (w["machine"], w["python"]):
    sys.exit("install.sh: this offline bundle has wheels for %s Python %s; this machine is %s Python %s: use the "
             "bundle without wheels (it downloads them), or make one for this machine" % (w["machine"], w["python"], *have))
missing = sorted(set(sys.argv[2].split(",")) - set(w["extras"]))
if missing:
    sys.exit("install.sh: this offline bundle has no wheels for %s (it has %s)" % (", ".join(missing), ", ".join(w["extras"])))
EOF
    PIP_SOURCE="--no-index --find-links $HERE/wheels"
    say "offline: the wheels come from $HERE/wheels"
fi

VENV=$PREFIX/venv
say "installing into $PREFIX (extras: $EXTRAS; default model: $MODEL)"
mkdir -p "$PREFIX" "$BIN_DIR"

# A failed install puts the previous one back: the venv is made where it will live (its scripts name
# their own path), so the old one is moved aside first.
rm -rf "$VENV.old" "$PREFIX/release.new"
[ -d "$VENV" ] && mv "$VENV" "$VENV.old"
restore() {
    status=$?
    if [ "$status" != 0 ]; then
        rm -rf "$VENV" "$PREFIX/release.new"
        [ -d "$VENV.old" ] && mv "$VENV.old" "$VENV"
        echo "install.sh: failed (exit $status); the previous install, if any, is unchanged" >&2
    fi
}
trap restore EXIT

VENV_OPTS=
[ "$PICAMERA" = 1 ] && VENV_OPTS=--system-site-packages
"$PYTHON" -m venv $VENV_OPTS "$VENV"
CONSTRAINT=
if [ "$PICAMERA" = 1 ] && "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    # bookworm's picamera2 is built against its numpy 1.24: keep that one in the venv.
    printf 'numpy<2\n' > "$PREFIX/constraints.txt"
    CONSTRAINT="--constraint $PREFIX/constraints.txt"
fi
# shellcheck disable=SC2086 (the option lists are meant to split)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir $PIP_SOURCE $CONSTRAINT "$WHEEL[$EXTRAS]"

cp -R "$HERE/release" "$PREFIX/release.new"
# The model loads (backend imported, sha256 checked against the manifest) before anything is replaced.
"$VENV/bin/python" -c 'import sys; from edge_runtime.classifier import Classifier; print("install.sh: " + Classifier(sys.argv[1]).describe())' \
    "$PREFIX/release.new/$MODEL"
rm -rf "$PREFIX/release.old"
[ -d "$PREFIX/release" ] && mv "$PREFIX/release" "$PREFIX/release.old"
mv "$PREFIX/release.new" "$PREFIX/release"
rm -rf "$PREFIX/release.old" "$VENV.old"
trap - EXIT

# The command on the PATH: the venv's edge-classify with the installed release as its default --model.
cat > "$BIN_DIR/edge-classify.tmp" <<EOF
#!/bin/sh
# Written by fashion-edge's install.sh: edge-classify with the installed release as the default model
# (--model or \$FASHION_EDGE_MODEL choose another).
export FASHION_EDGE_MODEL="\${FASHION_EDGE_MODEL:-$PREFIX/release/$MODEL}"
exec "$VENV/bin/edge-classify" "\$@"
EOF
chmod 755 "$BIN_DIR/edge-classify.tmp"
mv "$BIN_DIR/edge-classify.tmp" "$BIN_DIR/edge-classify"
say "edge-classify is $BIN_DIR/edge-classify (default model $PREFIX/release/$MODEL)"
case ":$PATH:" in *":$BIN_DIR:"*) ;; *) say "note: $BIN_DIR is not on your PATH (log in again, or add it)" ;; esac

[ "$SERVICE" = 1 ] || exit 0

# --- the service ------------------------------------------------------------------------------------
# systemd's ExecStart quoting: backslash and double quote escaped, % and $ doubled.
unit_quote() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/%/%%/g' -e 's/\$/$$/g')"; }
if [ -n "$THRESHOLD" ]; then
    "$VENV/bin/python" -c 'import sys; p = float(sys.argv[1]); sys.exit(not 0 <= p <= 1)' "$THRESHOLD" 2>/dev/null \
        || die "--threshold $THRESHOLD: expected a number between 0 and 1"
    THRESHOLD_ARG=" --threshold $THRESHOLD"
else
    THRESHOLD_ARG=
fi
ENV_FILE=$PREFIX/service.env
if ! grep -q '^FASHION_EDGE_TOKEN=.' "$ENV_FILE" 2>/dev/null; then
    # Made once, kept across reinstalls; read by systemd (as root) before it starts the service.
    (umask 077 && "$VENV/bin/python" -c 'import secrets; print("FASHION_EDGE_TOKEN=" + secrets.token_urlsafe(24))' > "$ENV_FILE")
fi
TOKEN=$(sed -n 's/^FASHION_EDGE_TOKEN=//p' "$ENV_FILE" | head -n 1)

UNIT_TARGET=${UNIT_DIR:-/etc/systemd/system}
mkdir -p "$UNIT_TARGET"
cat > "$UNIT_TARGET/$UNIT_NAME.tmp" <<EOF
# Written by fashion-edge's install.sh; run it again to change it.
[Unit]
Description=fashion-edge live classifier (edge-classify --camera $CAMERA --serve $LISTEN)
After=network-online.target
Wants=network-online.target
# A camera that is not there at boot fails the start: keep trying, every RestartSec, for ever.
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart=$VENV/bin/edge-classify --model $PREFIX/release/$MODEL --camera $(unit_quote "$CAMERA") --serve $(unit_quote "$LISTEN")$THRESHOLD_ARG
# The page's token (FASHION_EDGE_TOKEN): edge-classify never prints a token it was given, so it is in no log.
EnvironmentFile=$ENV_FILE
Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=5
# A user of its own, made by systemd for this service (not root); the video group opens the cameras.
DynamicUser=yes
User=fashion-edge
SupplementaryGroups=video
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
LockPersonality=yes

[Install]
WantedBy=multi-user.target
EOF
mv "$UNIT_TARGET/$UNIT_NAME.tmp" "$UNIT_TARGET/$UNIT_NAME"
say "systemd unit: $UNIT_TARGET/$UNIT_NAME"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$UNIT_TARGET/$UNIT_NAME" || die "systemd-analyze verify refused $UNIT_TARGET/$UNIT_NAME"
fi
HOST=${LISTEN%:*}
PORT=${LISTEN##*:}
case "$HOST" in 0.0.0.0|"") HOST=$(hostname) ;; esac
if [ -z "$UNIT_DIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable "$UNIT_NAME" >/dev/null 2>&1
    systemctl restart "$UNIT_NAME"
    say "started; at every boot too (systemctl status $UNIT_NAME, journalctl -u $UNIT_NAME)"
else
    say "not started here (--unit-dir, or systemd is not running); then: systemctl daemon-reload && systemctl enable --now $UNIT_NAME"
fi
say "the live page: http://$HOST:$PORT/?token=$TOKEN (the token is in $ENV_FILE)"
