#!/usr/bin/env bash
# Runs a command inside a small QEMU virtual machine whose kernel mounts ONLY cgroup2 (no
# v1 hierarchy anywhere, `cgroup_no_v1=all`), so that every controller (memory, pids, cpu,
# cpuset, io, hugetlb, ...) is on the unified hierarchy: the "pure v2" host that the
# build machine (a hybrid v1 + cgroup2 host) cannot be.
#
#   scripts/vm/cgroup2-vm.sh CMD [ARG...]
#
# The VM sees the host's whole file system read-only (virtio-9p), made writable by an
# overlay whose upper layer is in the VM's memory; /tmp, /run, /var/tmp and /var/lib/berth
# are fresh tmpfs mounts (a real file system, so tests can use them as overlay upper
# dirs), except for the host paths under them that CMD names (its directory, arguments,
# CARGO_TARGET_DIR). CMD runs as root in the caller's working directory with the caller's
# environment (plus BERTH_VM=cgroup2), in a cgroup of its own
# (/system.slice/berth-vm-job.service, the way systemd lays a v2 host out), and nothing
# it writes reaches the host. The script's exit status is CMD's; 124 when the VM ran past
# BERTH_VM_TIMEOUT seconds or died without reporting one.
#
# Needs root. First use apt-installs qemu-system-x86 and busybox-static if missing and
# unpacks the newest Debian kernel (linux-image-*-amd64, without running its install
# hooks) under BERTH_VM_CACHE (/var/cache/berth-vm).
#
# Settings (environment): BERTH_VM_TIMEOUT (seconds, default 1800), BERTH_VM_ACCEL (auto,
# kvm or tcg), BERTH_VM_MEM (4G), BERTH_VM_SMP (2), BERTH_VM_KERNEL_PKG (a linux-image
# package name), BERTH_VM_CACHE, BERTH_VM_APPEND (extra kernel arguments),
# BERTH_VM_DEBUG=1 (kernel messages and a trace of the VM's init on the console),
# BERTH_VM_TRIES (boots of a VM that died of the emulator, not the job; default 3).
set -euo pipefail

if [ $# -eq 0 ]; then
  sed -n '2,28s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi

log() { echo "cgroup2-vm: $*" >&2; }

# The accelerator: KVM when it can run a stock kernel, else QEMU's own emulator (TCG),
# which needs nothing from the host. /dev/kvm served by kvm_pvm (the paravirtual nested
# KVM of some cloud sandboxes, this build machine among them) cannot: Debian's bzImage
# stopped in its decompressor ("KVM internal error ... emulation failure" at a BMI2
# instruction, "kvm-pvm: INTERNAL_ERROR in batch emul" in dmesg), and the uncompressed
# kernel booted through PVH had not reached user space after 150 s (TCG: 4 s).
accel=${BERTH_VM_ACCEL:-auto}
if [ "$accel" = auto ]; then
  if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && ! [ -d /sys/module/kvm_pvm ]; then
    accel=kvm
  else
    accel=tcg
  fi
fi
case $accel in
  kvm) accel_args=(-enable-kvm -cpu host) ;;
  tcg) accel_args=(-accel tcg,thread=multi -cpu max) ;;
  *) log "BERTH_VM_ACCEL must be auto, kvm or tcg, not $accel"; exit 2 ;;
esac

CACHE=${BERTH_VM_CACHE:-/var/cache/berth-vm}
TIMEOUT=${BERTH_VM_TIMEOUT:-1800}
MEM=${BERTH_VM_MEM:-4G}
SMP=${BERTH_VM_SMP:-2}
BUSYBOX=/bin/busybox

# --- packages --------------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[ -x "$BUSYBOX" ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

# --- kernel: the newest Debian amd64 image, unpacked (not installed) into the cache -----
newest_kernel_pkg() {
  apt-cache pkgnames linux-image- 2>/dev/null |
    grep -E '^linux-image-[0-9][^ ]*-amd64$' | grep -v -E -- '-(cloud|rt)-amd64$' |
    sort -V | tail -n 1
}
pkg=${BERTH_VM_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
  # Reuse what the cache holds before asking apt (no network needed once cached).
  pkg=$(ls -1 "$CACHE" 2>/dev/null | grep -E '^linux-image-' | sort -V | tail -n 1 || true)
  [ -n "$pkg" ] && [ -f "$CACHE/$pkg/ready" ] || pkg=$(newest_kernel_pkg)
  if [ -z "$pkg" ]; then
    apt-get update -q >&2
    pkg=$(newest_kernel_pkg)
  fi
  [ -n "$pkg" ] || { log "no linux-image-*-amd64 package known to apt"; exit 1; }
fi
kdir=$CACHE/$pkg
if ! [ -f "$kdir/ready" ]; then
  log "unpacking $pkg into $kdir"
  mkdir -p "$CACHE"
  dl=$(mktemp -d "$CACHE/.dl.XXXXXX")
  trap 'rm -rf "$dl"' EXIT
  (cd "$dl" && apt-get download "$pkg" >&2 2>/dev/null) ||
    { apt-get update -q >&2 && (cd "$dl" && apt-get download "$pkg" >&2); }
  dpkg-deb -x "$dl"/*.deb "$dl/x"
  kver=$(ls -1 "$dl/x/lib/modules" | head -n 1)
  "$BUSYBOX" depmod -b "$dl/x" "$kver"
  rm -rf "$kdir"
  mkdir -p "$kdir/lib/modules"
  mv "$dl/x/boot/vmlinuz-$kver" "$kdir/vmlinuz"
  mv "$dl/x/lib/modules/$kver" "$kdir/lib/modules/$kver"
  echo "$kver" >"$kdir/ready"
  rm -rf "$dl"
  trap - EXIT
fi
kver=$(cat "$kdir/ready")

# --- per-run directory: initramfs, the job, and the status the VM writes back -----------
run=$(mktemp -d /tmp/berth-vm.XXXXXX)
qpid=
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$run/job" "$run/initrd/bin" "$run/initrd/lib/modules"

# The job: the caller's environment, working directory and command, as a bash script.
{
  echo '# generated by cgroup2-vm.sh'
  export -p | grep -v -E '^declare -x (BASH[A-Z_]*|SHLVL|PWD|OLDPWD|_|SSH_[A-Z_]*|DISPLAY)='
  echo 'export BERTH_VM=cgroup2'
  printf 'cd %q || exit 125\n' "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$run/job/job.sh"
# The VM mounts fresh tmpfs on these; what the job needs from under them on the host (its
# directory, CARGO_TARGET_DIR, paths in its arguments, also in DIR=FILE form: a CI clone
# in /tmp) is carried over, outermost paths only.
scratch='^/(tmp|var/tmp|run|var/lib/berth)(/|$)'
{
  printf '%s\n' "$PWD" "${CARGO_TARGET_DIR:-}"
  for a in "$@"; do
    IFS='=' read -r -a parts <<<"$a"
    for p in "${parts[@]}"; do
      case $p in /*) [ -e "$p" ] && { [ -d "$p" ] && echo "$p" || dirname "$p"; } ;; esac
    done
  done
} | grep -E "$scratch" | grep -v -E '^/(tmp|var/tmp|run|var/lib/berth)/?$' | sort -u |
  awk 'NR == 1 || index($0, last "/") != 1 { print; last = $0 }' >"$run/job/keep" || true
cat >"$run/job/vm.conf" <<EOF
modules_dir=$kdir/lib/modules/$kver
debug=${BERTH_VM_DEBUG:-0}
EOF

# The initramfs: busybox, the modules that mount the host's root (9p over virtio, and
# overlay), and the two init stages.
cp "$BUSYBOX" "$run/initrd/bin/busybox"
mods=(9p 9pnet_virtio overlay)
mdir=$kdir/lib/modules/$kver
for m in "${mods[@]}"; do
  rel=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$mdir/modules.dep" | head -n 1) ||
    { log "module $m not found in $pkg"; exit 1; }
  for f in ${rel/:/}; do
    mkdir -p "$run/initrd/lib/modules/$kver/$(dirname "$f")"
    cp "$mdir/$f" "$run/initrd/lib/modules/$kver/$f"
  done
done
"$BUSYBOX" depmod -b "$run/initrd" "$kver"
here=$(cd "$(dirname "$0")" && pwd)
cp "$here/init.sh" "$run/initrd/init"
cp "$here/stage2.sh" "$run/initrd/stage2"
chmod 755 "$run/initrd/init" "$run/initrd/stage2"
(cd "$run/initrd" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1 >"$run/initrd.img")
rm -rf "$run/initrd"

append="console=ttyS0 panic=-1 cgroup_no_v1=all"
if [ "${BERTH_VM_DEBUG:-0}" = 1 ]; then append+=" loglevel=7"; else append+=" quiet loglevel=1"; fi
append+=" ${BERTH_VM_APPEND:-}"

# A VM can die without running the job to its end for a reason that is the emulator's,
# not the job's: under TCG with several vCPUs the guest kernel sometimes oopses on an int3
# of its own code patching ("Oops: int3" in sched_clock_cpu, then "Kernel panic - not
# syncing: Fatal exception in interrupt"), 2 s into boot; seen once in CI, 0 times in 15
# boots here. Such a run is booted again, at most BERTH_VM_TRIES times (default 3):
# when the job had not started yet, or the console shows a kernel panic. A job that ran
# and ended without a panic, or a timeout, is not retried.
TRIES=${BERTH_VM_TRIES:-3}
attempt=0
while :; do
  attempt=$((attempt + 1))
  rm -f "$run/job/status" "$run/job/started" "$run/console"
  log "booting $pkg ($kver) under $accel, ${SMP} CPUs, ${MEM} memory (try $attempt of $TRIES); running: $*"
  # The host's root goes in read-only; the run directory read-write (the VM writes the
  # exit status there). The console is the serial port, copied to our stdout and to
  # run/console (to tell a kernel panic from the job's own end).
  timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
    "${accel_args[@]}" -m "$MEM" -smp "$SMP" \
    -display none -monitor none -no-reboot -nic none \
    -chardev stdio,id=con,signal=off,logfile="$run/console" -serial chardev:con \
    -kernel "$kdir/vmlinuz" -initrd "$run/initrd.img" -append "$append" \
    -fsdev local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
    -fsdev local,id=job,path="$run/job",security_model=passthrough,multidevs=remap \
    -device virtio-9p-pci,fsdev=job,mount_tag=berthjob \
    </dev/null &
  qpid=$!
  qrc=0
  wait "$qpid" || qrc=$?
  qpid=
  if [ -f "$run/job/status" ]; then
    rc=$(cat "$run/job/status")
    log "command exited with status $rc"
    exit "$rc"
  fi
  if [ "$qrc" = 124 ]; then
    log "timed out after ${TIMEOUT}s (BERTH_VM_TIMEOUT)"
    exit 124
  fi
  why=
  if ! [ -f "$run/job/started" ]; then
    why="before the job started"
  elif grep -q 'Kernel panic' "$run/console" 2>/dev/null; then
    why="in a kernel panic while the job ran"
  fi
  if [ -z "$why" ]; then
    log "the VM ended (qemu status $qrc) without reporting the command's status"
    exit 124
  fi
  if [ "$attempt" -ge "$TRIES" ]; then
    log "the VM ended $why (qemu status $qrc), $attempt times; giving up"
    exit 124
  fi
  log "the VM ended $why (qemu status $qrc); booting it again"
done
