#!/run/berth-vm/busybox sh
# Stage 2 of the cgroup v2 VM (pid 1 after switch_root, see cgroup2-vm.sh): lays out the
# cgroup2 tree the way systemd does on a v2 host, runs the job (job/job.sh, made by the
# host) in its own cgroup, writes its exit status to job/status and powers off.
B=/run/berth-vm/busybox
J=/run/berth-vm/job
. $J/vm.conf
[ "$debug" = 1 ] && set -x
echo /run/berth-vm/modprobe >/proc/sys/kernel/modprobe
$B stty -onlcr 2>/dev/null
$B hostname berth-vm
$B ip link set lo up
# Link types loaded up front, as on a host that has run containers before: loaded on
# demand, two bridges created at once can race the module's registration ("Unknown
# device type").
$B modprobe -a bridge veth 2>/dev/null

C=/sys/fs/cgroup
enable_all() {
  for c in $($B cat "$1/cgroup.controllers"); do
    echo "+$c" >"$1/cgroup.subtree_control" || echo "cgroup2-vm: cannot enable $c in $1"
  done
}
$B mkdir -p $C/init.scope
echo $$ >$C/init.scope/cgroup.procs
enable_all $C
$B mkdir -p $C/system.slice/berth-vm-job.service
enable_all $C/system.slice
[ "$debug" = 1 ] && $B cat /proc/self/mountinfo $C/cgroup.subtree_control

echo started >$J/started
(
  echo 0 >$C/system.slice/berth-vm-job.service/cgroup.procs
  exec /bin/bash $J/job.sh </dev/null
)
rc=$?
echo $rc >$J/status
$B sync
$B poweroff -f
$B reboot -f
