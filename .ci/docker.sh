#!/usr/bin/env bash
# The Docker engine for the container tests, started the only way allowed on these
# shared hosts: no bridge, no iptables rules, its own data root, exec root and socket
# under DIR. Containers then use the host network (or none).
#
#   .ci/docker.sh install      apt-get docker.io and debootstrap (CI's fresh machine)
#   .ci/docker.sh start DIR    start dockerd; print its DOCKER_HOST; exit 1 if it fails
#   .ci/docker.sh stop DIR     stop it by its pid file and unmount its network namespace
set -uo pipefail
cmd="${1:?usage: docker.sh install|start DIR|stop DIR}"
dir="${2:-}"

case "$cmd" in
install)
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      docker.io debootstrap >/dev/null
  fi
  ;;
start)
  [ -n "$dir" ] || { echo "docker.sh start needs a folder" >&2; exit 2; }
  command -v dockerd >/dev/null || { echo "dockerd is not installed" >&2; exit 1; }
  mkdir -p "$dir/data" "$dir/exec"
  nohup dockerd --data-root "$dir/data" --exec-root "$dir/exec" \
    -H "unix://$dir/docker.sock" --pidfile "$dir/exec/dockerd.pid" \
    --bridge=none --iptables=false --ip6tables=false >"$dir/dockerd.log" 2>&1 &
  for _ in $(seq 60); do
    if DOCKER_HOST="unix://$dir/docker.sock" docker info >/dev/null 2>&1; then
      echo "unix://$dir/docker.sock"
      exit 0
    fi
    kill -0 $! 2>/dev/null || break
    sleep 0.5
  done
  echo "dockerd did not start; last lines of $dir/dockerd.log:" >&2
  tail -n 5 "$dir/dockerd.log" >&2
  kill $! 2>/dev/null
  exit 1
  ;;
stop)
  [ -n "$dir" ] || { echo "docker.sh stop needs a folder" >&2; exit 2; }
  pidfile="$dir/exec/dockerd.pid"
  if [ -s "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null
  fi
  # dockerd leaves its default network namespace mounted; the folder cannot go
  # before it is unmounted.
  if mountpoint -q "$dir/exec/netns/default" 2>/dev/null; then
    umount "$dir/exec/netns/default"
  fi
  ;;
*)
  echo "usage: docker.sh install|start DIR|stop DIR" >&2
  exit 2
  ;;
esac
