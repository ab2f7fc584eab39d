#!/usr/bin/env bash
# Writes a busybox root filesystem as a tar stream (for `berth import` / `docker import`),
# built from Debian's busybox-static: no registry needed.
#   scripts/busybox-rootfs.sh > busybox.tar && berth import busybox.tar busybox:latest
set -euo pipefail
bb=$(command -v busybox || true)
[ -x /bin/busybox ] && bb=/bin/busybox
[ -n "$bb" ] || { echo "busybox not found: apt-get install busybox-static" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,run,root,home,var/www,var/log,mnt,usr}
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
for a in $("$bb" --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
ln -s ../bin "$root/usr/bin"; ln -s ../bin "$root/usr/sbin"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
echo 'hello from berth' > "$root/var/www/index.html"
tar --numeric-owner -C "$root" -cf - .
