#!/usr/bin/env bash
# The unit on a Raspberry Pi, emulated: a Debian 12 (bookworm) arm64 root built with debootstrap and run through
# qemu-user-static, the unit installed there exactly as the README's Pi section says, then the unit's commands and
# tests. Prints the versions installed and a pass/fail table; exits non-zero when any step failed.
#
#   sudo bench/pi_check.sh                       # everything (root needed: debootstrap, chroot, mounts)
#   DR_PI_PYTEST_ARGS="tests/device/test_kiosk.py -x" sudo -E bench/pi_check.sh   # only some tests
#
# Environment:
#   DR_PI_CACHE        where the arm64 root and pip's cache live (default ~/.cache/dr-unit-pi; never the repo)
#   DR_PI_CPU          cortex-a72 (Pi 4, default) or cortex-a76 (Pi 5): the CPU qemu emulates
#   DR_PI_MIRROR       the Debian mirror (default http://deb.debian.org/debian)
#   DR_PI_PYTEST_ARGS  what pytest runs (default "-n <host cores> tests/device tests/bridge")
#   DR_PI_DATA=0      do not mount ../shared/data (read-only) where the tests look for it; they then skip
#   DR_PI_SKIP_INSTALL=1  reuse the clone and venv of the last run (for rerunning tests only; not a clean check)
#   DR_PI_RUN="cmd"    only run cmd, as the unit's user in the last run's clone (e.g. ".venv/bin/python -m pytest
#                      tests/device/test_kiosk.py -x"), with the mounts the checks have; no table
#   DR_TEST_TIME_SCALE how much longer the tests' own waits may be (default 4 here: qemu runs aarch64 code several
#                      times slower than the CPU); it stretches timeouts only, never what a test asserts
#
# What it cannot check: a real camera (picamera2 is not in Debian: a stand-in stands for it in the tests), a
# framebuffer, GPIO, the microcontroller, or Pi timings (qemu's are not). docs/unit.md, "Checked on aarch64".
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${DR_PI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dr-unit-pi}
MIRROR=${DR_PI_MIRROR:-http://deb.debian.org/debian}
# One pytest worker per host core (pytest-xdist, in the dev extra): qemu-user runs each process on one core.
PYTEST_ARGS=${DR_PI_PYTEST_ARGS:--n $(nproc) tests/device tests/bridge}
SCALE=${DR_TEST_TIME_SCALE:-4}
ROOT=$CACHE/root
# The emulated CPU: a Pi 4's Cortex-A72 (or a Pi 5's Cortex-A76). Not qemu's default "max" CPU: it offers SVE, SME
# and i8mm, which no Pi has, and on it LiteRT's XNNPACK kernels give wrong outputs under qemu 7.2 (the bundled
# model's self-test: probability off by 0.56), while on cortex-a72 and cortex-a76 they match the card exactly.
PI_CPU=${DR_PI_CPU:-cortex-a72}
case $PI_CPU in
    cortex-a72) CPU_PART=0xd08 CPU_VARIANT=0x0 CPU_REVISION=3 PI_MODEL="Raspberry Pi 4 Model B (emulated)"
                CPU_FEATURES="fp asimd evtstrm crc32 cpuid" ;;
    cortex-a76) CPU_PART=0xd0b CPU_VARIANT=0x4 CPU_REVISION=1 PI_MODEL="Raspberry Pi 5 Model B (emulated)"
                CPU_FEATURES="fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    *) echo "pi_check: DR_PI_CPU must be cortex-a72 (Pi 4) or cortex-a76 (Pi 5), not '$PI_CPU'." >&2; exit 2 ;;
esac
PI_HOME=/home/pi
UNIT=$PI_HOME/unit
LOGS=$CACHE/logs
# What the README's Pi section installs from apt (python3-picamera2 is not in Debian: its own dependencies that
# matter to the venv, numpy 1.24 and Pillow 9.4, are installed in its place), plus what Raspberry Pi OS already has
# (python3-venv, python3-pip, git) and the font docs/unit.md installs. Not Chromium: under qemu-user 7.2 it aborts
# at start-up (its GPU and zygote processes die on ptrace and /proc/self/exe), so the console's browser test skips
# here, saying so, and runs on x86 in CI instead.
APT_PACKAGES="python3 python3-venv python3-pip git ca-certificates python3-cryptography python3-packaging
python3-numpy python3-pil fonts-dejavu-core"
NOT_IN_ROOT="chromium chromium-driver chromium-common"

die() { echo "pi_check: $*" >&2; exit 2; }
[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot and mounts): run it with sudo."
[[ "$CACHE" != "$REPO"* ]] || die "DR_PI_CACHE ($CACHE) is inside the repository: point it elsewhere."
mkdir -p "$CACHE/pip" "$LOGS"
START=$(date +%s)

# --- host tools: debootstrap and qemu-user-static (with binfmt_misc so the kernel runs arm64 binaries) ---------
if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static \
        binfmt-support >/dev/null || die "could not install debootstrap and qemu-user-static with apt."
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    [[ -e /proc/sys/fs/binfmt_misc/register ]] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
fi
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || die "the kernel cannot run arm64 binaries (binfmt_misc has no \
qemu-aarch64 entry and registering one failed): run it on a machine or container that allows binfmt_misc."

# --- the arm64 root, built once and cached ------------------------------------------------------------------------
MOUNTED=()
cleanup() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}"; done
    MOUNTED=()
}
trap cleanup EXIT
mount_root() {  # $1: the root; what the unit and its tests use: /proc, /sys, /dev, ptys, shared memory, pip cache
    local r=$1
    mount -t proc proc "$r/proc" && MOUNTED+=("$r/proc")
    # qemu-user 7.2 shows arm64 programs the host's x86 /proc/cpuinfo; LiteRT's XNNPACK (cpuinfo library) finds
    # no ARM core in it and crashes. The Pi's own (one entry per host CPU, as /sys reports them) stands in for it.
    local n
    for ((n = 0; n < $(nproc); n++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\n' "$n" "$CPU_FEATURES"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\n' "$CPU_VARIANT" "$CPU_PART"
        printf 'CPU revision\t: %s\n\n' "$CPU_REVISION"
    done >"$CACHE/cpuinfo"
    printf 'Hardware\t: BCM2835\nModel\t\t: %s\n' "$PI_MODEL" >>"$CACHE/cpuinfo"
    mount --bind "$CACHE/cpuinfo" "$r/proc/cpuinfo" && MOUNTED+=("$r/proc/cpuinfo")
    mount -t sysfs sys "$r/sys" && MOUNTED+=("$r/sys")
    mount --bind /dev "$r/dev" && MOUNTED+=("$r/dev")
    mount --bind /dev/pts "$r/dev/pts" && MOUNTED+=("$r/dev/pts")
    mount -t tmpfs -o mode=1777 shm "$r/dev/shm" && MOUNTED+=("$r/dev/shm")
    cp -L /etc/resolv.conf "$r/etc/resolv.conf"
}

if [[ ! -e $ROOT/.dr-root-complete ]]; then
    echo "== building the Debian 12 arm64 root in $ROOT (once; minutes)"
    rm -rf "$ROOT.tmp"
    t0=$(date +%s)
    debootstrap --foreign --arch arm64 --variant=minbase bookworm "$ROOT.tmp" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1 \
        || die "debootstrap (first stage) failed: see $LOGS/debootstrap.log."
    cp /usr/bin/qemu-aarch64-static "$ROOT.tmp/usr/bin/"  # for binfmt entries without the F flag
    chroot "$ROOT.tmp" /debootstrap/debootstrap --second-stage >>"$LOGS/debootstrap.log" 2>&1 \
        || die "debootstrap (second stage, under qemu) failed: see $LOGS/debootstrap.log."
    echo "deb $MIRROR bookworm main" >"$ROOT.tmp/etc/apt/sources.list"
    echo "deb $MIRROR bookworm-updates main" >>"$ROOT.tmp/etc/apt/sources.list"
    echo "deb http://security.debian.org/debian-security bookworm-security main" >>"$ROOT.tmp/etc/apt/sources.list"
    chroot "$ROOT.tmp" useradd --create-home --uid 1000 --shell /bin/bash pi
    echo "   root built in $(($(date +%s) - t0)) s"
    touch "$ROOT.tmp/.dr-root-complete"
    mv "$ROOT.tmp" "$ROOT"
fi
mount_root "$ROOT"
# The real data the tests read (../shared/data next to the clone), read-only, when this machine has it; the tests
# that need it skip cleanly otherwise. DR_PI_DATA=0 leaves it out.
DATA=$(cd "$REPO/.." && pwd)/shared/data
if [[ ${DR_PI_DATA:-1} == 1 && -d $DATA ]]; then
    mkdir -p "$ROOT$PI_HOME/shared/data"
    mount --bind "$DATA" "$ROOT$PI_HOME/shared/data" && MOUNTED+=("$ROOT$PI_HOME/shared/data")
    mount -o remount,bind,ro "$ROOT$PI_HOME/shared/data" \
        || echo "pi_check: could not make the data mount read-only; going on (the tests only read it)." >&2
fi
mkdir -p "$ROOT$PI_HOME/.cache/pip"
mount --bind "$CACHE/pip" "$ROOT$PI_HOME/.cache/pip" && MOUNTED+=("$ROOT$PI_HOME/.cache/pip")
chown 1000:1000 "$CACHE/pip"

if [[ "$(cat "$ROOT/.dr-apt" 2>/dev/null)" != "$APT_PACKAGES" ]]; then
    echo "== apt install (README's Pi section) in the arm64 root"
    # shellcheck disable=SC2086
    chroot "$ROOT" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends $(echo $APT_PACKAGES) && apt-get purge -y -qq $NOT_IN_ROOT" >"$LOGS/apt.log" 2>&1 \
        || die "apt-get install in the root failed: see $LOGS/apt.log."
    echo "$APT_PACKAGES" >"$ROOT/.dr-apt"
fi

# Certificate authorities this host adds to Debian's (a TLS-inspecting proxy on the way to PyPI, say): the root
# trusts them too, or pip there cannot reach PyPI.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null \
        && ! diff -rq /usr/local/share/ca-certificates "$ROOT/usr/local/share/ca-certificates" >/dev/null 2>&1; then
    rm -rf "$ROOT/usr/local/share/ca-certificates"
    cp -r /usr/local/share/ca-certificates "$ROOT/usr/local/share/"
    chroot "$ROOT" update-ca-certificates >>"$LOGS/apt.log" 2>&1 || die "update-ca-certificates in the root failed."
fi

as_pi() {  # a login-like shell as the unit's user, in the clone; the scale for the tests' waits exported
    chroot "$ROOT" /usr/sbin/runuser -u pi -- env -i HOME=$PI_HOME PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 DR_TEST_TIME_SCALE="$SCALE" QEMU_CPU="$PI_CPU" bash -c "cd $UNIT && $1"
}

if [[ -n ${DR_PI_RUN:-} ]]; then  # one command in the last run's clone, for chasing a failure
    as_pi "$DR_PI_RUN"
    exit $?
fi

# --- steps: name, command (run as the user pi in the fresh clone); each timed, logged, and entered in the table ---
NAMES=() RESULTS=() SECONDS_TAKEN=() STEP_LOG=
rm -f "$LOGS"/python_*.log "$LOGS"/pytest_*.log "$LOGS"/install_*.log  # only this run's steps in the logs
step() {  # $1 name, $2 command
    local t0 rc log
    log="$LOGS/$(echo "$1" | tr -c 'a-zA-Z0-9\n' '_').log"
    echo "== $1"
    t0=$(date +%s)
    as_pi "$2" >"$log" 2>&1
    rc=$?
    NAMES+=("$1") SECONDS_TAKEN+=($(($(date +%s) - t0))) STEP_LOG=$log
    if [[ $rc == 0 ]]; then RESULTS+=("pass"); else RESULTS+=("FAIL (exit $rc)"); fi
    tail -n 3 "$log" | sed 's/^/   /'
    return $rc
}

if [[ ${DR_PI_SKIP_INSTALL:-0} != 1 ]]; then
    echo "== fresh clone of $(git -C "$REPO" rev-parse --short HEAD) (committed work only)"
    rm -rf "$ROOT$UNIT"
    git clone -q --no-hardlinks "$REPO" "$ROOT$UNIT" || die "git clone of $REPO failed."
    chown -R 1000:1000 "$ROOT$UNIT"
    # README, "On the unit": the venv sees apt's packages; numpy<2 and OpenCV 4.11 pinned; then the test extras.
    step "install: venv + pip (README)" \
        "python3 -m venv --system-site-packages .venv && .venv/bin/pip install -q 'numpy<2' \
'opencv-python-headless==4.11.*' -e '.[unit,serial]' && .venv/bin/pip install -q -e '.[unit,serial,dev]'" \
        || { echo "pi_check: the install failed, nothing else can run: see $LOGS/." >&2; exit 1; }
fi
as_pi ".venv/bin/python - <<'EOF'
import platform, sys
import cv2, numpy
print('machine  ', platform.machine(), '|', platform.platform())
print('python   ', sys.version.split()[0])
print('numpy    ', numpy.__version__, '(' + numpy.__file__.rsplit('/', 3)[-3] + ')')
print('opencv   ', cv2.__version__)
for mod in ('ai_edge_litert', 'tflite_runtime'):
    try:
        m = __import__(mod)
        from importlib.metadata import version
        name = {'ai_edge_litert': 'ai-edge-litert', 'tflite_runtime': 'tflite-runtime'}[mod]
        print('%-9s' % mod.split('_')[0], name, version(name))
    except ImportError as exc:
        print('%-9s' % mod.split('_')[0], 'not installed:', exc)
EOF" | tee "$LOGS/versions.txt"

step "python -m device selftest" ".venv/bin/python -m device selftest"
step "python -m device screen samples/ --json" ".venv/bin/python -m device screen samples/ --json"
step "python -m device demo (README)" "rm -rf demo_output && .venv/bin/python -m device demo"
step "pytest $PYTEST_ARGS" ".venv/bin/python -m pytest -q -p no:cacheprovider $PYTEST_ARGS"
PYTEST_LOG=$STEP_LOG

# --- the table ---------------------------------------------------------------------------------------------------
echo
echo "Debian 12 arm64 under qemu-user-static, $PI_CPU ($(qemu-aarch64-static --version | head -1 | sed 's/.*version //')), \
clone of $(git -C "$REPO" rev-parse --short HEAD), $(($(date +%s) - START)) s in all:"
echo
echo "| step | result | seconds |"
echo "|---|---|---|"
failed=0
for i in "${!NAMES[@]}"; do
    echo "| ${NAMES[i]} | ${RESULTS[i]} | ${SECONDS_TAKEN[i]} |"
    [[ ${RESULTS[i]} == pass ]] || failed=1
done
grep -hE '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)' "$PYTEST_LOG" 2>/dev/null | tail -1 \
    | sed 's/^=* */pytest: /; s/ =*$//'
echo "logs: $LOGS"
exit $failed
