#!/usr/bin/env bash
# Installs the system packages Keeper's build needs on Debian/Ubuntu:
# libclang-dev (bindgen for librocksdb-sys), a C++ compiler, and iptables
# (for the partition test).
# Does nothing when they are already there.
set -euo pipefail
need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# iptables: the session partition test (tests/tests/session_partition.rs)
# drops one member's peer traffic with it; skipped loudly where missing.
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need+=(iptables)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${need[@]}"
