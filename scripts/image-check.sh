#!/usr/bin/env bash
# Build the Containerfile's image with buildah on a Debian bookworm base made by debootstrap,
# run `connector serve` in it, wait for /healthz, send one message to the loopback vendor fake
# and wait for its delivery report; then remove every container, image and storage it made.
# Needs root, Debian's buildah and debootstrap packages, and .venv with the test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "image-check: $*"; }
fail() { echo "image-check: FAILED: $*" >&2; exit 1; }
start=$SECONDS
[ "$(id -u)" = 0 ] || fail "run as root (debootstrap, and buildah's chroot isolation here)"
for tool in buildah debootstrap tar timeout; do
    command -v "$tool" >/dev/null || fail "$tool not found (apt-get install -y buildah debootstrap)"
done
[ -x .venv/bin/python ] || fail ".venv is missing: run scripts/setup.sh test first"

# The base is cached between runs on one machine (a fresh machine makes it); it is remade after
# a week so Debian's updates get in. CONNECTOR_IMAGE_CACHE moves the cache.
cache=${CONNECTOR_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/channel-api-connector}
base_tar=$cache/debian-bookworm-python3.tar
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Hosts behind a TLS-intercepting proxy trust its CA in the system bundle: give it to the build.
ca=${CONNECTOR_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
work=$(mktemp -d "${TMPDIR:-/tmp}/image-check.XXXXXX")
buildah=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
cleanup() {
    "${buildah[@]}" rm --all >/dev/null 2>&1 || true
    "${buildah[@]}" rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$cache"
find "$cache" -maxdepth 1 -name "$(basename "$base_tar")" -mtime +7 -delete
if [ ! -s "$base_tar" ]; then
    say "debootstrap bookworm with python3 from $mirror"
    timeout 900 debootstrap --variant=minbase --include=python3,python3-venv bookworm \
        "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap (log above)"; }
    rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*
    tar -C "$work/rootfs" --numeric-owner -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
    rm -rf "$work/rootfs"
    say "base made in $((SECONDS - start)) s"
else
    say "base from the cache: $base_tar"
fi
mkdir -p "$work/base"
ln "$base_tar" "$work/base/rootfs.tar" 2>/dev/null || cp "$base_tar" "$work/base/rootfs.tar"
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["python3"]\n' >"$work/base/Containerfile"
base=localhost/debian-bookworm-python3:check
timeout 600 "${buildah[@]}" bud --isolation chroot --quiet -t "$base" "$work/base" >/dev/null \
    || fail "importing the base image"

image=localhost/channel-api-connector:check
secret=()
[ -s "$ca" ] && secret=(--secret "id=ca,src=$ca")
say "building $image"
built=$SECONDS
timeout 1200 "${buildah[@]}" bud --isolation chroot --format docker --layers=false "${secret[@]}" \
    --build-arg "BASE=$base" -t "$image" . >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; fail "buildah bud (log above)"; }
say "built in $((SECONDS - built)) s"

container=$("${buildah[@]}" from --quiet "$image")
# The final stage: the connector's user, no compiler, no installer, no download cache.
inside() { timeout 60 "${buildah[@]}" run --isolation chroot "$container" -- "$@"; }
[ "$(inside id -u)" = 10001 ] || fail "the image does not run as UID 10001"
inside sh -c 'for t in gcc cc c++ make uv; do ! command -v $t; done' >/dev/null \
    || fail "a compiler or the installer is in the final stage: $(inside sh -c 'command -v gcc cc make uv')"
inside sh -c '! ls -d /root/.cache /var/lib/connector/.cache /tmp/wheels 2>/dev/null' >/dev/null \
    || fail "a cache or build leftover is in the final stage"

timeout 300 .venv/bin/python -m tests.image_driver --buildah "${buildah[*]}" --image "$image" \
    --container "$container" || fail "the image did not serve (output above)"
say "ok in $((SECONDS - start)) s"
