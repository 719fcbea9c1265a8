# Sourced by tests/image/build.sh and the tests that run the image with podman: the
# containers storage and configuration Turnpike's tests use, under ~/.cache/turnpike, so
# nothing is written to the machine's /var/lib/containers or /etc/containers.
#
# Sets CONTAINERS_CONF (runc: crun fails on hybrid cgroup v1; nofile within this machine's
# hard limit of 20000) and the array `storage` of buildah/podman storage flags.
containers_dir="${XDG_CACHE_HOME:-$HOME/.cache}/turnpike/containers"
mkdir -p "$containers_dir"
cat > "$containers_dir/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$containers_dir/containers.conf"
# shellcheck disable=SC2034 # used by the scripts that source this file
storage=(--root "$containers_dir/storage" --runroot "$containers_dir/run" --storage-driver overlay)
