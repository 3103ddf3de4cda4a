# Sourced by the suites that check /dev/shm when they are done (shm-suite, hosts-suite).
# An orphan: an ibcomm name of this user in /dev/shm (a segment, ".../<rank>.<pid>", or a
# mix's doorbell, "<segment>.bell") whose owner, the pid in the name, is gone. Live owners'
# names are left out: make check runs other tests beside these.
shm_orphans() {
	for f in /dev/shm/ibcomm."$(id -u)".*; do
		[ -e "$f" ] || continue
		n=${f%.bell}
		kill -0 "${n##*.}" 2>/dev/null || echo "${f##*/}"
	done | sort
}
shm_orphans_start() {
	shm_before=$(shm_orphans)
	[ -n "$shm_before" ] || shm_before=-
}
shm_orphans_new() { shm_orphans | grep -vxF "$shm_before"; }
# Fails (1) when orphans appeared since shm_orphans_start. A rank another test killed a
# moment ago may still own one, which its survivors remove: asked again after 3 s.
shm_orphans_check() {
	if [ -n "$(shm_orphans_new)" ] && sleep 3 && [ -n "$(shm_orphans_new)" ]; then
		echo "FAIL: ibcomm names left in /dev/shm by ranks that are gone:"
		shm_orphans_new
		return 1
	fi
}
