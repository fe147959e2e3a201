#!/usr/bin/env bash
# Start libvirt's system daemon for tests/test_power_libvirt.py (run as root; .ci/run does).
# QEMU as root (/dev/kvm is root-only here and guests are TCG anyway: without this libvirt
# re-probes QEMU on every define), virtlogd first, and libvirtd under tini as a subreaper
# (PID 1 of a container does not reap orphans, and libvirtd deadlocks on a zombie probe).
set -euo pipefail
if [ "$(id -u)" != 0 ] || ! command -v libvirtd >/dev/null || ! command -v tini >/dev/null; then
    echo "start-libvirt: needs root, libvirtd and tini (make e2e-deps); the libvirt tests skip"
    exit 0
fi
conf=/etc/libvirt/qemu.conf
grep -q '^user = "root"' "$conf" || printf 'user = "root"\ngroup = "root"\n' >> "$conf"
if virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "start-libvirt: libvirtd already answers"
    exit 0
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
setsid nohup tini -s -- libvirtd >/tmp/libvirtd.log 2>&1 < /dev/null &
for _ in $(seq 1 120); do
    virsh -c qemu:///system version >/dev/null 2>&1 && { echo "start-libvirt: up"; exit 0; }
    sleep 0.5
done
echo "start-libvirt: libvirtd did not answer within 60 s (see /tmp/libvirtd.log)"
