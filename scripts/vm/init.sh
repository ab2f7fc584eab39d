#!/bin/busybox sh
# Stage 1 of the cgroup v2 VM (the initramfs's /init, see cgroup2-vm.sh): mounts the
# host's root (9p, read-only) under a writable overlay, adds fresh proc/sys/dev, tmpfs
# scratch dirs and ONLY cgroup2, then switches root and runs stage 2 as pid 1.
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /host /rw /newroot /job
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

fail() {
  echo "cgroup2-vm init: $*"
  [ -d /job ] && echo 125 >/job/status 2>/dev/null
  sync
  poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

modprobe 9pnet_virtio || fail "cannot load 9pnet_virtio"
modprobe 9p || fail "cannot load 9p"
modprobe overlay || fail "cannot load overlay"

p9=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o $p9 berthjob /job || fail "cannot mount the job directory"
. /job/vm.conf
[ "$debug" = 1 ] && set -x
mount -t 9p -o $p9,ro,cache=loose hostroot /host || fail "cannot mount the host's root"

mount -t tmpfs -o mode=755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
  fail "cannot mount the overlay root"

n=/newroot
mount -t proc proc $n/proc
mount -t sysfs sysfs $n/sys
mount -t devtmpfs devtmpfs $n/dev
mkdir -p $n/dev/pts $n/dev/shm $n/dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts $n/dev/pts
mount -t tmpfs -o mode=1777 shm $n/dev/shm
mount -t mqueue mqueue $n/dev/mqueue
# Only the unified hierarchy, with the options systemd uses on a v2 host.
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $n/sys/fs/cgroup ||
  mount -t cgroup2 cgroup2 $n/sys/fs/cgroup || fail "cannot mount cgroup2"
mount -t bpf bpf $n/sys/fs/bpf 2>/dev/null
mount -t debugfs debugfs $n/sys/kernel/debug 2>/dev/null
# Real (non-overlay) file systems where tests make overlay upper dirs and state; the
# host paths under them that the job needs (job/keep) stay visible, moved on top.
mkdir /keep
i=0
while IFS= read -r p; do
  [ -d "$n$p" ] || continue
  i=$((i + 1))
  mkdir /keep/$i
  mount --bind "$n$p" /keep/$i && echo "$p" >/keep/$i.path
done </job/keep
for d in tmp var/tmp run var/lib/berth; do
  mkdir -p $n/$d
  mount -t tmpfs -o mode=1777 tmpfs $n/$d
done
for f in /keep/*.path; do
  [ -f "$f" ] || continue
  p=$(cat "$f")
  mkdir -p "$n$p"
  mount --move "${f%.path}" "$n$p" || fail "cannot keep $p"
done
chmod 755 $n/run $n/var/lib/berth
# The kernel's modules for this kernel (the host's /lib/modules has the host kernel's).
mkdir -p $n/lib/modules/$(uname -r)
mount --bind $n$modules_dir $n/lib/modules/$(uname -r) || fail "no modules at $modules_dir"
mkdir -p $n/run/berth-vm/job
mount --move /job $n/run/berth-vm/job
cp /bin/busybox /stage2 $n/run/berth-vm/
printf '#!/run/berth-vm/busybox sh\nexec /run/berth-vm/busybox modprobe "$@"\n' >$n/run/berth-vm/modprobe
chmod 755 $n/run/berth-vm/modprobe $n/run/berth-vm/stage2
umount /proc/sys 2>/dev/null
exec switch_root /newroot /run/berth-vm/busybox sh /run/berth-vm/stage2
