#!/bin/sh
# Builds the test guest for vhostwire from the Debian packages installed on this machine:
#   linux-image-amd64   the kernel (/boot/vmlinuz-<ver>) and its virtio modules (/lib/modules/<ver>)
#   busybox-static      a static busybox: the whole userland
#   ethtool (optional)  copied in with its shared libraries, for `ethtool -S` and `ethtool -L`
# into a cache directory, never into the repository:
#   $VHOSTWIRE_GUEST_CACHE, or ~/.cache/vhostwire/guest
# Output: <cache>/vmlinuz and <cache>/initramfs.cpio.gz (the init is qemu/guest-init.sh).
# Rebuilt only when the kernel, busybox or the init script changed (or with --force).
#
# usage: qemu/build-guest.sh [--force] [--kernel VERSION] [--cache DIR] [--quiet]
# Prints the two paths, one per line, on success.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${VHOSTWIRE_GUEST_CACHE:-${HOME:-/root}/.cache/vhostwire/guest}
kver=
force=0
quiet=0
while [ $# -gt 0 ]; do
	case $1 in
	--force) force=1 ;;
	--quiet) quiet=1 ;;
	--kernel) kver=$2; shift ;;
	--cache) cache=$2; shift ;;
	-h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "build-guest.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

die() { echo "build-guest.sh: $*" >&2; exit 1; }
say() { [ "$quiet" = 1 ] || echo "$*" >&2; }

# The newest installed kernel that has both an image and modules.
if [ -z "$kver" ]; then
	for k in $(ls /boot/ 2>/dev/null | sed -n 's/^vmlinuz-//p' | sort -V); do
		[ -d "/lib/modules/$k" ] && kver=$k
	done
fi
[ -n "$kver" ] || die "no kernel in /boot with modules in /lib/modules (apt-get install linux-image-amd64)"
kernel=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[ -r "$kernel" ] || die "$kernel is not readable"

busybox=
for b in /bin/busybox /usr/bin/busybox; do
	if [ -x "$b" ] && ldd "$b" 2>&1 | grep -q 'not a dynamic'; then
		busybox=$b; break
	fi
done
[ -n "$busybox" ] || die "no static busybox (apt-get install busybox-static)"

init=$here/guest-init.sh
[ -r "$init" ] || die "$init is missing"
ethtool=$(command -v ethtool 2>/dev/null || true)

# What the image is made of; the image is rebuilt when this changes.
stamp=$( {
	echo "kernel $kver $(stat -c '%s %Y' "$kernel")"
	echo "busybox $(stat -c '%s %Y' "$busybox")"
	echo "ethtool ${ethtool:+$(stat -c '%s %Y' "$ethtool")}"
	cat "$init" "$0"
} | md5sum | cut -d' ' -f1)

mkdir -p "$cache"
if [ "$force" = 0 ] && [ -f "$cache/stamp" ] && [ "$(cat "$cache/stamp")" = "$stamp" ] \
	&& [ -f "$cache/vmlinuz" ] && [ -f "$cache/initramfs.cpio.gz" ]; then
	say "guest is up to date in $cache (kernel $kver)"
	echo "$cache/vmlinuz"
	echo "$cache/initramfs.cpio.gz"
	exit 0
fi

say "building guest: kernel $kver, $busybox${ethtool:+, $ethtool} -> $cache"
root=$(mktemp -d "$cache/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/proc" "$root/sys" "$root/dev" \
	"$root/tmp" "$root/run" "$root/etc" "$root/lib/modules/$kver"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$init" "$root/init"
chmod 755 "$root/init"

# virtio-net and what it depends on, in load order (the init insmods them in this order). On a kernel
# where some are built in, they are simply absent.
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
: > "$root/lib/modules/$kver/load-order"
for m in $modules; do
	f=$(find "$moddir/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n1)
	if [ -z "$f" ]; then
		grep -q "/$m.ko" "$moddir/modules.builtin" 2>/dev/null || die "module $m is neither in $moddir nor built in"
		continue
	fi
	case $f in
	*.ko) cp "$f" "$root/lib/modules/$kver/$m.ko" ;;
	*.ko.xz) xz -dc "$f" > "$root/lib/modules/$kver/$m.ko" ;;
	*.ko.zst) zstd -qdc "$f" > "$root/lib/modules/$kver/$m.ko" ;;
	*.ko.gz) gzip -dc "$f" > "$root/lib/modules/$kver/$m.ko" ;;
	esac
	echo "$m" >> "$root/lib/modules/$kver/load-order"
done

# ethtool and the shared libraries it needs (ld.so included), at the same paths as on the host.
if [ -n "$ethtool" ]; then
	cp "$ethtool" "$root/usr/sbin/ethtool"
	for lib in $(ldd "$ethtool" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\).*/\1/p'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
fi

echo "$kver" > "$root/etc/vw-kernel"
(cd "$root" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -6 > "$cache/initramfs.cpio.gz.tmp"
cp "$kernel" "$cache/vmlinuz.tmp"
mv "$cache/initramfs.cpio.gz.tmp" "$cache/initramfs.cpio.gz"
mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
echo "$stamp" > "$cache/stamp"
say "guest built: $(du -h "$cache/initramfs.cpio.gz" | cut -f1) initramfs"
echo "$cache/vmlinuz"
echo "$cache/initramfs.cpio.gz"
