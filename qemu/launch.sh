#!/bin/sh
# Boots the vhostwire test guest in QEMU with its virtio-net NIC on a vhost-user socket. The same command
# line `vhostwire vm` builds (src/vm.ts); this script is for using it without Node, or for copying from.
#
# usage: qemu/launch.sh --name vm0 --socket /tmp/vm0.sock [--ip 10.0.0.1/24] [--server] [--queues N]
#                       [--memory MiB] [--hugepages] [--mac MAC] [--accel auto|kvm|tcg]
#                       [--test "ping 10.0.0.2 5"]... [--print]
#
#   (default)   QEMU connects to the socket and reconnects every second:
#                 vhostwire serve --vhost-user vm0=/tmp/vm0.sock ...
#   --server    QEMU listens on the socket (server=on,wait=off); vhostwire connects and reconnects:
#                 vhostwire serve --vhost-user vm0=/tmp/vm0.sock,client ...
#   --queues N  N queue pairs: queues=N on the netdev, mq=on on the device (the guest enables them all)
#   --accel     auto (default): KVM when /dev/kvm is usable and a probe boot under KVM reaches the guest's
#               init, else TCG (QEMU 7.2 under TCG crashes in MSI-X setup with vhost-user: vectors=0)
#   --test      guest commands (qemu/guest-init.sh) run at boot, then power off
#   --print     print the command line instead of running it
# The console is this terminal (Ctrl-A x quits QEMU). Either way QEMU does not run the guest until the
# backend has connected and negotiated.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
name= socket= ip= server=0 queues=1 memory=256 hugepages=0 mac= accel=auto tests= print=0
while [ $# -gt 0 ]; do
	case $1 in
	--name) name=$2; shift ;;
	--socket) socket=$2; shift ;;
	--ip) ip=$2; shift ;;
	--server) server=1 ;;
	--queues) queues=$2; shift ;;
	--memory) memory=$2; shift ;;
	--hugepages) hugepages=1 ;;
	--mac) mac=$2; shift ;;
	--accel) accel=$2; shift ;;
	--test) tests="${tests:+$tests,}$(echo "$2" | tr -s ' ' ':')"; shift ;;
	--print) print=1 ;;
	-h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "launch.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$name" ] && [ -n "$socket" ] || { echo "launch.sh: --name and --socket are required" >&2; exit 2; }
case $queues in [1-8]) ;; *) echo "launch.sh: --queues: 1..8" >&2; exit 2 ;; esac

qemu=$(command -v qemu-system-x86_64) || { echo "launch.sh: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)" >&2; exit 1; }
{ read -r kernel; read -r initrd; } <<EOF
$(sh "$here/build-guest.sh" --quiet)
EOF

if [ "$accel" = auto ]; then
	accel=tcg
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
		cache=$(dirname "$kernel")
		key="$(uname -r) $qemu $kernel $(stat -c %s "$kernel")"
		if [ -f "$cache/accel-probe.sh" ] && [ "$(head -n1 "$cache/accel-probe.sh")" = "$key" ]; then
			accel=$(sed -n 2p "$cache/accel-probe.sh")
		else
			# Some nested hosts open /dev/kvm but hang or crash the guest: boot once to find out.
			if timeout 20 "$qemu" -machine pc -accel kvm -cpu host -m 128 -nodefaults -nographic -no-reboot \
				-kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 quiet panic=-1 vw.test=mark:probe" \
				-serial stdio </dev/null 2>/dev/null | grep -q VW-READY; then
				accel=kvm
			fi
			printf '%s\n%s\n' "$key" "$accel" > "$cache/accel-probe.sh" 2>/dev/null || true
		fi
	fi
fi

[ -n "$mac" ] || mac=52:54:00:$(printf '%s' "$name" | sha256sum | sed 's/^\(..\)\(..\)\(..\).*/\1:\2:\3/')
if [ "$accel" = kvm ]; then vectors=$((2 * queues + 2)); cpu="-cpu host"; else vectors=0; cpu=; fi
if [ "$hugepages" = 1 ]; then
	mem="memory-backend-file,id=mem,size=${memory}M,mem-path=/dev/hugepages,share=on"
else
	mem="memory-backend-memfd,id=mem,size=${memory}M,share=on"
fi
if [ "$server" = 1 ]; then
	chardev="socket,id=vhu0,path=$socket,server=on,wait=off"
else
	chardev="socket,id=vhu0,path=$socket,reconnect=1"
fi
mq=
[ "$queues" -gt 1 ] && mq=",mq=on"
append="console=ttyS0 quiet loglevel=3 panic=-1 vw.name=$name${ip:+ vw.ip=$ip}"
[ "$queues" -gt 1 ] && append="$append vw.queues=$queues"
if [ -n "$tests" ]; then append="$append vw.test=$tests vw.end=poweroff"; else append="$append vw.end=stay"; fi

set -- "$qemu" -name "$name" -machine pc -accel "$accel" $cpu -m "$memory" -smp 1 \
	-object "$mem" -numa node,memdev=mem \
	-nodefaults -nographic -no-reboot \
	-kernel "$kernel" -initrd "$initrd" -append "$append" \
	-chardev "$chardev" \
	-netdev "vhost-user,id=net0,chardev=vhu0,queues=$queues" \
	-device "virtio-net-pci,netdev=net0,mac=$mac$mq,vectors=$vectors,romfile=" \
	-serial mon:stdio
if [ "$print" = 1 ]; then
	for a in "$@"; do
		case $a in *[!A-Za-z0-9_@%+=:,./-]*) printf "'%s' " "$a" ;; *) printf '%s ' "$a" ;; esac
	done
	echo
	exit 0
fi
exec "$@"
