#!/bin/sh
# Installs the Debian packages tmtrace needs to build and to run its tests.
# Idempotent: packages already present are left as they are (never upgraded),
# and apt is not touched at all when nothing is missing. It never names the
# Python packages: the tests run against the interpreters as the machine
# ships them (an install of python3.11 would replace Debian's build).
set -eu

PACKAGES="make gcc clang llvm pkg-config bpftool libbpf-dev libelf-dev libdw-dev zlib1g-dev \
libcapstone-dev libcunit1-dev binutils util-linux procps"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	echo "install-deps: all packages present"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages:$missing; run as root to install them" >&2
	exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -q --no-install-recommends --no-upgrade $missing
