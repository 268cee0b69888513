#!/bin/bash
# Builds the Debian image of tend's test machines into $1 (once; the caller
# caches it under ~/.cache/tend/machines). A machine boots it with real
# systemd through systemd-nspawn on an overlay of its own, so the image
# itself is never written to. Needs root and debootstrap. Uses the host's own apt
# mirror, so no address is written into the project.
set -euo pipefail
OUT=$1
TMP=$OUT.tmp
MIRROR=${MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)}
if [ -z "$MIRROR" ]; then
  MIRROR=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
rm -rf "$TMP"
debootstrap --variant=minbase bookworm "$TMP" ${MIRROR:+"$MIRROR"} >"$OUT.log" 2>&1 || { tail -20 "$OUT.log" >&2; exit 1; }
# No service may start inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' >"$TMP/usr/sbin/policy-rc.d"; chmod +x "$TMP/usr/sbin/policy-rc.d"
mount -t proc proc "$TMP/proc"
trap 'umount "$TMP/proc" 2>/dev/null || true' EXIT
chroot "$TMP" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  systemd systemd-sysv dbus openssh-server iproute2 procps ca-certificates nftables kmod >/dev/null && apt-get clean' \
  >>"$OUT.log" 2>&1 || { tail -20 "$OUT.log" >&2; exit 1; }
umount "$TMP/proc"; trap - EXIT
rm -f "$TMP/usr/sbin/policy-rc.d"
# Per-machine identity comes from the harness: no shared host keys, no
# hostname that would override nspawn's --hostname, no apt lists.
rm -f "$TMP"/etc/ssh/ssh_host_* "$TMP/etc/hostname" "$TMP/etc/machine-id"
rm -rf "$TMP"/var/lib/apt/lists/* "$TMP"/var/cache/apt/archives/*.deb
: >"$TMP/etc/apt/sources.list"; rm -f "$TMP"/etc/apt/sources.list.d/*
sed -i 's/^#\?PasswordAuthentication.*/PasswordAuthentication no/' "$TMP/etc/ssh/sshd_config"
mkdir -p "$TMP/root/.ssh"; chmod 700 "$TMP/root/.ssh"
# Units a container cannot run would only add noise to the boot.
for u in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer; do
  chroot "$TMP" systemctl mask "$u" >/dev/null 2>&1 || true
done
rm -rf "$OUT"; mv "$TMP" "$OUT"
du -sh "$OUT"
