#!/usr/bin/env bash
# Build a Python 3.13 base image (Debian trixie, python3 + venv) without any
# container registry: debootstrap a minimal root file system and `docker import` it.
# Usage: containers/base.sh [TAG]   (default edf/python:3.13-trixie)
# Needs root, debootstrap and a reachable Debian mirror (the one apt uses). The
# rootfs tarball is kept in $EDF_IMAGE_CACHE (default /tmp/edf-image-cache), so a
# second build on the same machine takes seconds.
set -euo pipefail
tag="${1:-edf/python:3.13-trixie}"
cache="${EDF_IMAGE_CACHE:-/tmp/edf-image-cache}"
tarball="$cache/trixie-python3.13-rootfs.tar"

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag exists"
  exit 0
fi
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || {
    echo "containers/base.sh: debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
  }
  mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  mkdir -p "$cache"
  rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tzdata \
    trixie "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
      echo "containers/base.sh: debootstrap failed; see $cache/debootstrap.log" >&2
      exit 1
    }
  # Package lists and downloaded .debs are of no use in an image.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
fi
docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' "$tarball" "$tag" >/dev/null
echo "built base image $tag from $tarball"
