# guest-lib.sh: what tests/rxe/rxe-run and tests/hosts/hosts-run share (sourced by both, bash):
# the prerequisites of a Soft-RoCE QEMU guest, the one initramfs both boot, the lock that keeps
# two runs from building it at once, and QEMU's common arguments.
#
# The initramfs is busybox plus the virtio/9p modules: its init mounts this machine's root
# read-only over 9p, chroots into it and runs the shell script named by guest_job=PATH on the
# kernel command line as PID 1 (PID 1 must be the chrooted process: module autoload, as
# rdma_rxe's need of crc32_generic, runs the host's modprobe only from inside the host root).

GUEST_CACHE=/var/tmp/ibcomm-guest
# rxe-run's lock since it exists: a run of an older checkout still honours it
GUEST_LOCK=/var/tmp/ibcomm-rxe/.lock

# guest_prereqs: sets kver, kernel and busybox, or calls the caller's `skip REASON`.
guest_prereqs() {
	command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
	kver=$(ls /lib/modules 2>/dev/null | sort -V | tail -1)
	[[ -n $kver && -r /boot/vmlinuz-$kver ]] ||
		skip "no readable kernel /boot/vmlinuz-* with modules (apt-get install linux-image-amd64)"
	kernel=/boot/vmlinuz-$kver
	busybox=/bin/busybox # busybox-static's: the initramfs has no libc
	[[ -x $busybox ]] || skip "$busybox not found (apt-get install busybox-static)"
	modprobe -S "$kver" --show-depends rdma_rxe >/dev/null 2>&1 || skip "kernel $kver has no rdma_rxe module"
	command -v cpio >/dev/null || skip "cpio not found"
	command -v rdma >/dev/null || skip "the rdma tool is missing (apt-get install iproute2)"
	initrd=$GUEST_CACHE/initrd-$kver-v2.gz
}

# guest_lock WHO [wait]: takes the lock on fd 8, saying so when another run holds it.
guest_lock() {
	mkdir -p "$(dirname "$GUEST_LOCK")"
	exec 8>"$GUEST_LOCK"
	if ! flock -n 8; then
		echo "$1: another guest is running; waiting for it" >&2
		flock 8
	fi
}

# guest_initrd: builds $initrd unless it is there (call it holding the lock).
guest_initrd() {
	local root i f b m
	[[ -s $initrd ]] && return 0
	mkdir -p "$GUEST_CACHE"
	root=$(mktemp -d "$GUEST_CACHE/root.XXXXXX")
	mkdir -p "$root"/{bin,mods,proc,sys,dev,mnt}
	cp "$busybox" "$root/bin/busybox"
	for a in sh mount insmod chroot poweroff cat sed; do ln -s busybox "$root/bin/$a"; done
	i=0
	for f in $(for m in virtio_pci 9pnet_virtio 9p; do modprobe -S "$kver" --show-depends $m; done |
		awk '$1 == "insmod" {print $2}' | awk '!s[$0]++'); do
		i=$((i + 1)); b=$(printf '%02d_%s' $i "$(basename "$f")")
		case $f in
		*.xz) xz -dc "$f" >"$root/mods/${b%.xz}" ;;
		*.zst) zstd -dc "$f" >"$root/mods/${b%.zst}" ;;
		*) cp "$f" "$root/mods/$b" ;;
		esac
	done
	cat >"$root/init" <<'INIT'
#!/bin/sh
# PID 1 must end up as the chrooted shell: module autoload (rdma_rxe needs crc32_generic)
# runs the host's modprobe only from inside the host root.
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in /mods/*.ko; do insmod $m; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 host /mnt || poweroff -f
for d in proc sys dev; do mount --bind /$d /mnt/$d; done
mount -t tmpfs tmp /mnt/tmp; mount -t tmpfs run /mnt/run
job=$(sed -n 's/.*guest_job=\([^ ]*\).*/\1/p' /proc/cmdline)
exec chroot /mnt /bin/sh "$job"
INIT
	chmod +x "$root/init"
	(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip) >"$initrd.tmp.$$"
	mv "$initrd.tmp.$$" "$initrd"
	rm -rf "$root"
}

# guest_qemu MEM SMP JOB APPEND...: the command line of a guest that runs the script JOB, in the
# array GUEST_QEMU (the caller adds its own -virtfs, network and so on).
guest_qemu() {
	local mem=$1 smp=$2 job=$3
	shift 3
	GUEST_QEMU=(qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "$mem" -smp "$smp" -nographic -no-reboot
		-kernel "$kernel" -initrd "$initrd"
		-append "console=ttyS0 quiet loglevel=3 panic=-1 guest_job=$job $*"
		-virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap)
}
