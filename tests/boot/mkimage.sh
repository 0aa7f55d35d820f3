#!/bin/bash
# Makes the boot world's base image: a Debian 12 (bookworm) root tree that boots under systemd-nspawn with
# systemd as PID 1 and runs its user data through Debian's cloud-init, as an EC2 instance would.
#
# Usage: tests/boot/mkimage.sh DIR [MIRROR]
#   DIR      the tree to make (its parent must exist); kept when it is already complete (DIR/.complete)
#   MIRROR   the Debian mirror (default: the first http(s) URI of the host's apt sources, else
#            http://deb.debian.org/debian)
#
# The tree holds: debootstrap's minbase with systemd, systemd-sysv and dbus; cloud-init (installed in a
# second step, inside the tree: putting it in --include fails on python3-cryptography's dependencies),
# configured for the NoCloud datasource with networking left alone (the machine shares the host's network);
# what the user-data scripts use (bash, curl, ca-certificates, procps, iproute2); the host's apt settings
# that matter (Check-Valid-Until and the like) and its bookworm sources when they are Debian's. The instance's
# seed (user-data, meta-data) is not in the image: the boot world writes it into each machine's own layer.
#
# It is made in DIR.tmp and renamed when complete, so an interrupted run leaves no half tree behind.
# Exit status: 0 done, 1 failure, 2 bad usage.
set -euo pipefail

PROG=mkimage.sh
say() {
    echo "$PROG: $(date -u +%T) $*"
}
die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

(($# >= 1 && $# <= 2)) || {
    echo "usage: $PROG DIR [MIRROR]" >&2
    exit 2
}
dir=$1
mirror=${2:-}
if [[ -z $mirror ]]; then
    mirror=$(sed -n 's/^URIs: *\(https\?:[^ ]*\/debian\)\/\?$/\1/p; s/^deb \(\[[^]]*\] \)\?\(https\?:[^ ]*\/debian\)\/\? bookworm .*/\2/p' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n 1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi

if [[ -f $dir/.complete ]]; then
    say "$dir is complete, keeping it"
    exit 0
fi
((EUID == 0)) || die "must run as root (debootstrap and chroot)"
command -v debootstrap >/dev/null || die "debootstrap not found (Debian package debootstrap)"

tmp=$dir.tmp
# Leftovers of an interrupted run: unmount what the chroot step bound, then start again.
for m in "$tmp/proc" "$tmp/sys" "$tmp/dev"; do
    if mountpoint -q "$m" 2>/dev/null; then
        umount -l "$m"
    fi
done
rm -rf --one-file-system -- "$tmp"

t0=$SECONDS
say "debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates,curl,procps,iproute2 \
    bookworm "$tmp" "$mirror" >"$dir.debootstrap.log" 2>&1 || {
    tail -n 30 "$dir.debootstrap.log" >&2
    die "debootstrap failed (log: $dir.debootstrap.log)"
}
say "debootstrap done in $((SECONDS - t0)) s"

# The host's apt settings that make apt work here (no hooks: those name host programs).
for conf in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
    [[ -f $conf ]] || continue
    grep -q Invoke "$conf" && continue
    cp -- "$conf" "$tmp$conf"
done
if grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release; then
    for src in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        [[ -f $src ]] || continue
        grep -Eq 'debian(-security)?/?( |$)' "$src" || continue
        cp -- "$src" "$tmp$src"
        rm -f -- "$tmp/etc/apt/sources.list"
    done
fi

cleanup_mounts() {
    local m
    for m in "$tmp/dev" "$tmp/sys" "$tmp/proc"; do
        if mountpoint -q "$m" 2>/dev/null; then
            umount -l "$m" || true
        fi
    done
}
trap cleanup_mounts EXIT
mount -t proc proc "$tmp/proc"
mount --rbind /sys "$tmp/sys"
mount --rbind /dev "$tmp/dev"
cp /etc/resolv.conf "$tmp/etc/resolv.conf"
t1=$SECONDS
say "installing cloud-init in the tree"
chroot "$tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends cloud-init && apt-get clean' \
    >"$dir.cloud-init.log" 2>&1 || {
    tail -n 30 "$dir.cloud-init.log" >&2
    die "installing cloud-init failed (log: $dir.cloud-init.log)"
}
cleanup_mounts
trap - EXIT
say "cloud-init installed in $((SECONDS - t1)) s"

# NoCloud only: no probing of EC2's metadata address or any other datasource, and the network left as the
# host made it. The seed directory is where the world puts each machine's user-data and meta-data.
cat >"$tmp/etc/cloud/cloud.cfg.d/90-nocloud.cfg" <<'CFG'
# The boot world: every machine is seeded from /var/lib/cloud/seed/nocloud/ (user-data, meta-data).
datasource_list: [ NoCloud, None ]
datasource:
  NoCloud:
    seedfrom: /var/lib/cloud/seed/nocloud/
network: {config: disabled}
manage_etc_hosts: false
# minbase has no locales package: keep the C.UTF-8 that glibc carries.
locale: C.UTF-8
CFG
# The machine shares the host's network: nothing inside may rewrite it or wait for it.
for unit in systemd-networkd.service systemd-networkd-wait-online.service systemd-resolved.service \
    systemd-timesyncd.service getty@tty1.service console-getty.service apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$tmp/etc/systemd/system/$unit"
done
: >"$tmp/etc/machine-id"
rm -f "$tmp/etc/hostname"
echo "bookworm boot-world image, made $(date -u +%FT%TZ) from $mirror" >"$tmp/etc/boot-world-image"
touch "$tmp/.complete"
rm -rf --one-file-system -- "$dir"
mv -- "$tmp" "$dir"
say "image ready in $dir after $((SECONDS - t0)) s"
