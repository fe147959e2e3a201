#!/bin/sh
# PID 1 of the initramfs the end-to-end test boots with a real Linux kernel (test_e2e_qemu.py).
# A stand-in installer: bring up the NIC, fetch the server's report.sh, report an install
# through it, then power the VM off. The kernel command line names the server and the token:
#   e2e_server=http://10.0.2.2:PORT e2e_token=TOKEN
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

done_or_die() {
    echo "e2e-init: $*"
    poweroff -f
}

for word in $(cat /proc/cmdline); do
    case $word in
        e2e_server=*) server=${word#e2e_server=} ;;
        e2e_token=*) token=${word#e2e_token=} ;;
    esac
done
[ -n "$server" ] || done_or_die "no e2e_server= on the kernel command line"

# The NIC driver, its dependencies first (the test wrote the order).
while read -r module; do
    insmod "/modules/$module" || done_or_die "insmod $module failed"
done < /modules/order

# QEMU's user network always gives the guest 10.0.2.15 with the host at 10.0.2.2.
nic=
for path in /sys/class/net/*; do
    [ "${path##*/}" = lo ] || { nic=${path##*/}; break; }
done
[ -n "$nic" ] || done_or_die "no network interface"
ip link set lo up
ip link set "$nic" up
ip addr add 10.0.2.15/24 dev "$nic"
ip route add default via 10.0.2.2

wget -q -O /bin/provisioner-report "$server/api/v1/report.sh?token=$token" \
    || done_or_die "cannot fetch $server/api/v1/report.sh"
chmod +x /bin/provisioner-report
echo "e2e-init: fetched report.sh from $server"

provisioner-report install_started || done_or_die "install_started was refused"
provisioner-report install_progress in_progress "e2e initramfs halfway" 50 \
    || done_or_die "install_progress was refused"
provisioner-report install_complete success "e2e initramfs done" \
    || done_or_die "install_complete was refused"
done_or_die "reports sent"
