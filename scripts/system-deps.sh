#!/usr/bin/env bash
# Install the Debian packages watchlog runs and tests with, when they are missing.
# As root: apt-get installs them. Otherwise: print the one command that does, and go on
# (the launcher says which component it leaves out, and why).
set -euo pipefail

declare -A BINARY=(
  [redis-server]=redis-server [redis-tools]=redis-cli [prometheus]=promtool
  [prometheus-redis-exporter]=prometheus-redis-exporter [wrk]=wrk [shellcheck]=shellcheck [prometheus-alertmanager]=amtool
)
missing=()
for pkg in "$@"; do
  command -v "${BINARY[$pkg]:-$pkg}" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a packaged redis-server/prometheus where systemd runs; watchlog runs its
  # own on other ports, so nothing else is needed.
else
  echo "missing Debian packages: ${missing[*]}"
  echo "install them with:  sudo apt-get install -y ${missing[*]}"
fi
