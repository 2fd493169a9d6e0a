#!/usr/bin/env bash
# Make a Debian base image from the distribution itself, for machines that reach Debian's and
# PyPI's package registries but no container registry (so `FROM python:3.11-slim` cannot be pulled).
#
#   docker/make-base.sh [TAG]          default TAG: zooserve/debian:bookworm
#
# debootstrap --variant=minbase from the host's Debian mirror, then the host's apt sources, apt
# configuration and CA certificates are copied in (so apt and pip inside builds reach the same
# registries as the host), and the tree is `docker import`ed. Needs root, debootstrap and a
# running Docker engine. Takes about half a minute. Skips the work when TAG already exists
# (ZOOSERVE_REBUILD_BASE=1 forces it).
set -euo pipefail

TAG="${1:-zooserve/debian:bookworm}"
SUITE="${ZOOSERVE_BASE_SUITE:-bookworm}"

if [ "${ZOOSERVE_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists (ZOOSERVE_REBUILD_BASE=1 to remake it)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "need debootstrap (apt-get install debootstrap)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >&2; exit 2; }

# The host's Debian mirror: first URIs of a deb822 .sources file serving $SUITE, else sources.list.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    if grep -qE "^Suites:.*\b${SUITE}\b" "$f"; then
        mirror="$(awk '/^URIs:/ {print $2; exit}' "$f")"
        [ -n "$mirror" ] && break
    fi
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror="$(awk -v s="$SUITE" '$1 == "deb" && $3 == s {print $2; exit}' /etc/apt/sources.list)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

root="$(mktemp -d /tmp/zooserve-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
echo "debootstrap --variant=minbase $SUITE from $mirror"
debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# apt: the host's active sources (not *.disabled*) and configuration
rm -f "$root/etc/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && cp "$f" "$root$f"
done
cp -a /etc/apt/apt.conf.d/. "$root/etc/apt/apt.conf.d/"
for d in trusted.gpg.d keyrings preferences.d auth.conf.d; do
    [ -d "/etc/apt/$d" ] && cp -a "/etc/apt/$d/." "$root/etc/apt/$d/"
done
[ -f /etc/apt/trusted.gpg ] && cp /etc/apt/trusted.gpg "$root/etc/apt/trusted.gpg"
# CA certificates: the host's bundle, also as a local CA so update-ca-certificates keeps it
mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates/host-bundle.crt"
if [ -d /usr/local/share/ca-certificates ]; then
    cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
# a small image: no apt lists, caches, docs or locales beyond what minbase has
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/tmp/* "$root"/var/log/*.log

tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase made by zooserve docker/make-base.sh from $mirror\"" \
    - "$TAG" >/dev/null
echo "made $TAG in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
