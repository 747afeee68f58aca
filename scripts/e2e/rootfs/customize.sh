#!/bin/sh
# mmdebstrap --customize-hook of build-rootfs.sh: runs outside the chroot,
# with the finished tree as $1 (no arm64 program runs: systemctl --root only
# edits unit links). $2: the overlay directory; any further arguments are
# units to mask.
set -eu
r="$1" overlay="$2"
shift 2
cp -a "$overlay/." "$r/"
chown -R 0:0 "$r/etc/systemd/system/e2e-report.service" "$r/usr/local/sbin/e2e-report"
systemctl --root="$r" enable e2e-report.service
systemctl --root="$r" set-default multi-user.target
for unit in "$@"; do systemctl --root="$r" mask "$unit"; done
# (mmdebstrap copied the build machine's /etc/hostname, mode and all.)
rm -f "$r/etc/hostname"
echo e2e-rootfs >"$r/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 e2e-rootfs\n::1 localhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
# The kernel mounts the root (root=/dev/vda rw); no fsck at boot (pass 0):
# the cases check the file system from L1 with the VM stopped.
printf '/dev/vda / ext4 rw,errors=remount-ro 0 0\n' >"$r/etc/fstab"
# Empty: systemd makes up a machine id at every boot, none is baked in.
: >"$r/etc/machine-id"
rm -f "$r/var/lib/dbus/machine-id" "$r/etc/resolv.conf"
mkdir -p "$r/usr/share/e2e-rootfs"
dpkg-query --admindir="$r/var/lib/dpkg" -W -f '${Package} ${Version} ${Architecture}\n' |
  LC_ALL=C sort >"$r/usr/share/e2e-rootfs/packages"
