#!/bin/sh
# /init of the vhostwire test guest (built into the initramfs by qemu/build-guest.sh).
#
# Kernel command line (read from /proc/cmdline):
#   vw.name=NAME          shown in the result lines
#   vw.ip=ADDR/PREFIX     address of the virtio-net interface, e.g. 10.0.0.1/24
#   vw.queues=N           queue pairs to enable (ethtool -L combined N); the kernel enables only as many
#                         as there are CPUs by itself
#   vw.mtu=N              interface MTU
#   vw.test=CMD[,CMD...]  commands to run once the network is up, arguments separated by ':',
#                         e.g. vw.test=ping:10.0.0.2:10,stats
#   vw.end=poweroff|stay  after vw.test: power off (default when vw.test is given) or stay up and read
#                         commands from the console (default otherwise)
#
# Console protocol: every line meant for a program starts with "VW-" and is key=value pairs:
#   VW-READY name=vm0 if=eth0 ip=10.0.0.1/24 mac=52:54:00:00:00:01 queues=1 max_queues=2 boot_s=4.21
#   VW-RESULT id=ID test=CMD ok=1|0 ...      once per command, when it is done
#   VW-LISTEN id=ID port=P                   tcp-recv is listening (start the sender after this)
#   VW-PING id=ID seq=N t=UPTIME             one per echo reply of `watch`
#   VW-RAW id=ID <text>                      raw tool output (ip -s link, ethtool -S)
# When staying up, each console line is a command: "[@ID] CMD ARGS... [&]" (a trailing & runs it in the
# background). Commands:
#   ping IP [COUNT=5] [INTERVAL=0.2]         sent= received= loss= rtt_min= rtt_avg= rtt_max= (ms)
#   watch IP SECONDS [INTERVAL=0.1]          ping for SECONDS, VW-PING per reply; sent= received=
#                                            max_gap_s= (longest run of lost replies, in seconds)
#                                            max_silence_s= (longest time between two replies)
#   tcp-recv PORT [TIMEOUT=60] [check]       receive one TCP stream: bytes= seconds= [md5=]
#   tcp-send IP PORT MIB [check]             send MIB MiB (zeros, or a random pattern with md5= when check)
#                                            bytes= seconds= mbit_s= [md5=]
#   stats                                    interface counters (sysfs; ip link and /proc/net/dev as VW-RAW;
#                                            ethtool -S per queue as ethtool.NAME=N)
#   queues N                                 ethtool -L IF combined N
#   txq N                                    transmit on queue N only (XPS), to exercise one queue pair
#   sleep S | mark TEXT | poweroff
#   anything else                            run by the shell; its output as is, then VW-RESULT rc=
PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH

/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
# Keep the console for our lines: only errors from the kernel from now on.
echo 3 > /proc/sys/kernel/printk

say() { echo "$*"; }
now() { cut -d' ' -f1 /proc/uptime; }

VW_NAME=guest VW_IP= VW_QUEUES= VW_MTU= VW_TEST= VW_END=
for w in $(cat /proc/cmdline); do
	case $w in
	vw.name=*) VW_NAME=${w#*=} ;;
	vw.ip=*) VW_IP=${w#*=} ;;
	vw.queues=*) VW_QUEUES=${w#*=} ;;
	vw.mtu=*) VW_MTU=${w#*=} ;;
	vw.test=*) VW_TEST=${w#*=} ;;
	vw.end=*) VW_END=${w#*=} ;;
	esac
done
[ -n "$VW_END" ] || { [ -n "$VW_TEST" ] && VW_END=poweroff || VW_END=stay; }

off() {
	sync
	poweroff -f
	sleep 5
	echo o > /proc/sysrq-trigger
}

kver=$(uname -r)
while read -r m; do
	insmod "/lib/modules/$kver/$m.ko" || say "VW-ERROR name=$VW_NAME msg=insmod_$m"
done < "/lib/modules/$kver/load-order"

IF=
i=0
while [ $i -lt 100 ]; do
	for d in /sys/class/net/*; do
		n=${d##*/}
		[ "$n" = lo ] || { IF=$n; break; }
	done
	[ -n "$IF" ] && break
	sleep 0.05
	i=$((i + 1))
done
if [ -z "$IF" ]; then
	say "VW-ERROR name=$VW_NAME msg=no_network_interface"
	off
fi

sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null
sysctl -qw net.ipv6.conf.default.disable_ipv6=1 2>/dev/null
ip link set lo up
[ -n "$VW_MTU" ] && ip link set "$IF" mtu "$VW_MTU"
[ -n "$VW_IP" ] && ip addr add "$VW_IP" dev "$IF"
ip link set "$IF" up

# Queue pairs: what the device offers and what is in use.
qcount() { ls -d /sys/class/net/$IF/queues/$1-* 2>/dev/null | wc -l; }
max_queues=$(ethtool -l "$IF" 2>/dev/null | awk '/^Pre-set/ {p=1} p && /^Combined:/ {print $2; exit}')
[ -n "$max_queues" ] || max_queues=unknown
if [ -n "$VW_QUEUES" ] && [ "$VW_QUEUES" != "$(qcount rx)" ]; then
	ethtool -L "$IF" combined "$VW_QUEUES" >/dev/null 2>&1 || say "VW-ERROR name=$VW_NAME msg=ethtool_L_combined_$VW_QUEUES"
fi

cmd_ping() { # ID IP [COUNT] [INTERVAL]
	id=$1 ip=$2 count=${3:-5} interval=${4:-0.2}
	out=$(ping -c "$count" -i "$interval" -W 2 -w $((count + 10)) "$ip" 2>&1)
	echo "$out" | awk -v id="$id" -v ip="$ip" '
		/packets transmitted/ { sent = $1; recv = $4; loss = $7; sub("%", "", loss) }
		/round-trip/ { split($4, r, "/") }
		END {
			if (sent == "") { sent = 0; recv = 0; loss = 100 }
			printf "VW-RESULT id=%s test=ping ok=%d peer=%s sent=%s received=%s loss=%s rtt_min=%s rtt_avg=%s rtt_max=%s\n",
				id, (recv > 0 && recv == sent), ip, sent, recv, loss, r[1] == "" ? "-" : r[1], r[2] == "" ? "-" : r[2], r[3] == "" ? "-" : r[3]
		}'
}

cmd_watch() { # ID IP SECONDS [INTERVAL]
	id=$1 ip=$2 secs=$3 interval=${4:-0.1}
	ping -i "$interval" -w "$secs" "$ip" 2>&1 | awk -v id="$id" -v ip="$ip" -v iv="$interval" '
		/bytes from/ {
			s = $0; sub(/.*seq=/, "", s); sub(/ .*/, "", s); seq = s + 0
			getline up < "/proc/uptime"; close("/proc/uptime"); split(up, u, " ")
			printf "VW-PING id=%s seq=%d t=%s\n", id, seq, u[1]
			fflush()
			# A restart may only delay replies (requests wait in the ring): silence counts, not just loss.
			if (n > 0 && u[1] - lastt > maxsil) maxsil = u[1] - lastt
			lastt = u[1]
			if (n > 0 && seq - last - 1 > maxmiss) maxmiss = seq - last - 1
			if (n == 0) first = seq
			last = seq; n++
		}
		/packets transmitted/ { sent = $1 }
		END {
			if (sent == "") sent = 0
			# Replies missing before the first one count too: traffic that never came back.
			if (n > 0 && first > maxmiss) maxmiss = first
			if (n == 0) maxmiss = sent
			printf "VW-RESULT id=%s test=watch ok=%d peer=%s sent=%s received=%d max_gap_s=%.2f max_silence_s=%.2f\n", id, (n > 0), ip, sent, n, maxmiss * iv, maxsil
		}'
}

pattern() { [ -f /tmp/pattern ] || head -c 1048576 /dev/urandom > /tmp/pattern; }

cmd_tcp_recv() { # ID PORT [TIMEOUT] [check]
	id=$1 port=$2 tmo=${3:-60} check=$4
	out=/tmp/recv.$port
	rm -f "$out"
	# busybox nc exits as soon as its peer half-closes: the receiver must never see EOF on its stdin (or
	# it would shut down its side and stop the sender mid-stream). A FIFO opened read-write never does.
	hold=/tmp/hold.$port
	rm -f "$hold"
	mkfifo "$hold"
	if [ "$check" = check ]; then
		timeout "$tmo" nc -l -p "$port" 0<>"$hold" > "$out" &
	else
		timeout "$tmo" nc -l -p "$port" 0<>"$hold" | wc -c > "$out.count" &
	fi
	pid=$!
	i=0
	while ! netstat -ltn 2>/dev/null | grep -q ":$port "; do
		i=$((i + 1)); [ $i -gt 200 ] && break
		sleep 0.05
	done
	say "VW-LISTEN id=$id port=$port"
	t0=$(now)
	wait $pid
	rc=$?
	t1=$(now)
	md5=
	if [ "$check" = check ]; then
		bytes=$(wc -c < "$out")
		md5=" md5=$(md5sum < "$out" | cut -d' ' -f1)"
	else
		bytes=$(cat "$out.count" 2>/dev/null || echo 0)
	fi
	rm -f "$out" "$out.count" "$hold"
	bytes=$((bytes + 0))
	ok=0; [ "$rc" = 0 ] && [ "$bytes" -gt 0 ] && ok=1
	say "VW-RESULT id=$id test=tcp-recv ok=$ok rc=$rc port=$port bytes=$bytes seconds=$(awk "BEGIN {print $t1 - $t0}")$md5"
}

cmd_tcp_send() { # ID IP PORT MIB [check]
	id=$1 ip=$2 port=$3 mib=$4 check=$5
	md5=
	if [ "$check" = check ]; then
		pattern
		md5=" md5=$(i=0; while [ $i -lt "$mib" ]; do cat /tmp/pattern; i=$((i + 1)); done | md5sum | cut -d' ' -f1)"
		t0=$(now)
		(i=0; while [ $i -lt "$mib" ]; do cat /tmp/pattern; i=$((i + 1)); done) | nc "$ip" "$port"
		rc=$?
	else
		t0=$(now)
		dd if=/dev/zero bs=65536 count=$((mib * 16)) 2>/dev/null | nc "$ip" "$port"
		rc=$?
	fi
	t1=$(now)
	bytes=$((mib * 1048576))
	awk -v id="$id" -v rc="$rc" -v ip="$ip" -v port="$port" -v b="$bytes" -v t0="$t0" -v t1="$t1" -v md5="$md5" 'BEGIN {
		s = t1 - t0; if (s <= 0) s = 0.01
		printf "VW-RESULT id=%s test=tcp-send ok=%d rc=%s peer=%s port=%s bytes=%d seconds=%.2f mbit_s=%.1f%s\n",
			id, rc == 0, rc, ip, port, b, s, b * 8 / s / 1e6, md5 }'
}

cmd_stats() { # ID
	id=$1
	line="VW-RESULT id=$id test=stats ok=1 if=$IF rx_queues=$(qcount rx) tx_queues=$(qcount tx)"
	for c in rx_packets rx_bytes rx_errors rx_dropped tx_packets tx_bytes tx_errors tx_dropped; do
		line="$line $c=$(cat /sys/class/net/$IF/statistics/$c)"
	done
	# Busybox's ip has no -s: /proc/net/dev has the same counters.
	ip link show dev "$IF" | while IFS= read -r l; do say "VW-RAW id=$id $l"; done
	grep -E "^ *(Inter|face|$IF:)" /proc/net/dev | while IFS= read -r l; do say "VW-RAW id=$id $l"; done
	if command -v ethtool >/dev/null; then
		line="$line$(ethtool -S "$IF" 2>/dev/null | awk -F: 'NF == 2 && $2 ~ /[0-9]/ { gsub(/ /, "", $1); gsub(/ /, "", $2); printf " ethtool.%s=%s", $1, $2 }')"
	fi
	say "$line"
}

run() { # ID CMD ARGS...
	id=$1 c=$2
	shift 2
	case $c in
	ping) cmd_ping "$id" "$@" ;;
	watch) cmd_watch "$id" "$@" ;;
	tcp-recv) cmd_tcp_recv "$id" "$@" ;;
	tcp-send) cmd_tcp_send "$id" "$@" ;;
	stats) cmd_stats "$id" ;;
	queues)
		ethtool -L "$IF" combined "$1" >/dev/null 2>&1
		rc=$?
		say "VW-RESULT id=$id test=queues ok=$((rc == 0)) rx_queues=$(qcount rx) tx_queues=$(qcount tx)" ;;
	txq)
		# Transmit on queue $1 only: XPS maps our single CPU to that queue alone.
		for q in /sys/class/net/$IF/queues/tx-*; do
			if [ "${q##*/tx-}" = "$1" ]; then echo 1 > "$q/xps_cpus"; else echo 0 > "$q/xps_cpus"; fi
		done 2>/dev/null
		say "VW-RESULT id=$id test=txq ok=1 queue=$1" ;;
	sleep) sleep "$1"; say "VW-RESULT id=$id test=sleep ok=1" ;;
	mark) say "VW-RESULT id=$id test=mark ok=1 text=$*" ;;
	poweroff) say "VW-RESULT id=$id test=poweroff ok=1"; off ;;
	'') ;;
	*)
		sh -c "$c $*"
		rc=$?
		say "VW-RESULT id=$id test=sh ok=$((rc == 0)) rc=$rc" ;;
	esac
}

say "VW-READY name=$VW_NAME if=$IF ip=${VW_IP:-none} mac=$(cat /sys/class/net/$IF/address) queues=$(qcount rx) max_queues=$max_queues boot_s=$(now)"

n=0
for t in $(echo "$VW_TEST" | tr ',' ' '); do
	n=$((n + 1))
	# shellcheck disable=SC2046
	run "boot$n" $(echo "$t" | tr ':' ' ')
done

if [ "$VW_END" = poweroff ]; then
	say "VW-DONE name=$VW_NAME"
	off
fi

stty -echo 2>/dev/null
say "VW-STAY name=$VW_NAME"
while :; do
	if ! IFS= read -r line; then
		sleep 1
		continue
	fi
	set -- $line
	[ $# -gt 0 ] || continue
	id=-
	case $1 in
	@*) id=${1#@}; shift ;;
	esac
	[ $# -gt 0 ] || continue
	eval "last=\${$#}"
	if [ "$last" = '&' ]; then
		# Drop the trailing &: rebuild the arguments without it.
		args=
		while [ $# -gt 1 ]; do args="$args $1"; shift; done
		# shellcheck disable=SC2086
		run "$id" $args &
	else
		run "$id" "$@"
	fi
done
