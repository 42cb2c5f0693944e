#!/usr/bin/env bash
# Installs everything wrapcrypt's build, tests, demo and benchmarks need on a
# Debian machine. Idempotent: packages already present are not fetched again.
set -euo pipefail

PKGS=(
  cryptsetup-bin xz-utils jq openssl e2fsprogs util-linux
  fuse3 libfuse3-dev pkg-config
  softhsm2 opensc p11-kit p11-kit-modules
  swtpm swtpm-tools tpm2-tools libtss2-dev
  python3 python3-cryptography libargon2-dev
  systemd man-db
  gdb hyperfine time procps fio
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all Debian packages present"
fi

# The oracle for XTS/CBC vectors is Python `cryptography` (OpenSSL's AES).
if ! python3 -c 'import cryptography' 2>/dev/null; then
  python3 -m pip install -q cryptography
fi

# /dev/fuse and the loop driver are needed by `open`.
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
