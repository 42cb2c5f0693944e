#!/usr/bin/env bash
# Re-encipher benchmarks (docs/reencipher.md). Prints rows
#   name|ratio|detail|command
# 1. one volume: reencipher time ÷ the KDF time of the same volume (one
#    passphrase unlock, `open --test-passphrase`), for --staged, --complete
#    and --in-place --from-old. Staging unlocks and seals one keyslot (two
#    KDF runs), completion unlocks the staged keyslot (one), in-place does
#    unlock + seal (two); the rest is provider round trips and header I/O.
# 2. staging 100 volumes in one batch (sparse images, pbkdf2 1000
#    iterations): total seconds.
# A private custodian runs in a temp dir (WRAPCRYPT_CUSTODIAN_SOCKET) and
# is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
W=${WRAPCRYPT_BIN:-$ROOT/target/release/wrapcrypt}
[ -x "$W" ] || W=$ROOT/target/debug/wrapcrypt
[ -x "$(dirname "$W")/wrapcrypt-custodiand" ] || { echo "wrapcrypt-custodiand missing beside $W (cargo build -p wrapcrypt-custodian)" >&2; exit 1; }
work=$(mktemp -d /tmp/wrapcrypt-renc.XXXXXX)
export WRAPCRYPT_CUSTODIAN_SOCKET=$work/c.sock
stop() {
  if [ -f "$work/c.state/custodiand.lock" ]; then kill "$(cat "$work/c.state/custodiand.lock")" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap stop EXIT
ITER=${RENC_KDF_ITER:-500000}
N=${RENC_BATCH:-100}

now() { date +%s.%N; }
secs() { python3 -c 'import sys; print(f"{float(sys.argv[2])-float(sys.argv[1]):.3f}")' "$1" "$2"; }
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2]):.2f}")' "$1" "$2"; }
timed() { local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now); secs "$t0" "$t1"; }

printf 'bench passphrase' > "$work/pass"
"$W" custodian status >/dev/null

# 1. one volume
v=$work/one.img; truncate -s 20M "$v"
"$W" luksFormat -q --cipher waes-xts-plain64 --pbkdf pbkdf2 --pbkdf-force-iterations "$ITER" "$v" "$work/pass"
kdf=$(timed "$W" open --test-passphrase --key-file "$work/pass" "$v")
"$W" custodian load-new-master-key >/dev/null
st=$(timed "$W" reencipher --staged "$v" --key-file "$work/pass")
"$W" custodian set-master-key >/dev/null
co=$(timed "$W" reencipher --complete "$v" --key-file "$work/pass")
# a second volume left under OLD, moved in place
v2=$work/two.img; truncate -s 20M "$v2"
"$W" luksFormat -q --cipher waes-xts-plain64 --pbkdf pbkdf2 --pbkdf-force-iterations "$ITER" "$v2" "$work/pass"
"$W" custodian load-new-master-key >/dev/null
"$W" custodian set-master-key >/dev/null
ip=$(timed "$W" reencipher --from-old --in-place "$v2" --key-file "$work/pass")
echo "reencipher --staged ÷ KDF time (pbkdf2 $ITER it.; 2 KDF runs)|$(ratio "$st" "$kdf")|${st}s vs KDF ${kdf}s|wrapcrypt reencipher --staged IMG --key-file F"
echo "reencipher --complete ÷ KDF time (1 KDF run)|$(ratio "$co" "$kdf")|${co}s vs KDF ${kdf}s|wrapcrypt reencipher --complete IMG --key-file F"
echo "reencipher --from-old --in-place ÷ KDF time (2 KDF runs)|$(ratio "$ip" "$kdf")|${ip}s vs KDF ${kdf}s|wrapcrypt reencipher --from-old --in-place IMG --key-file F"

# 2. a batch of N volumes
printf 'p' > "$work/p1"
for i in $(seq 1 "$N"); do
  truncate -s 17M "$work/b$i.img"
  "$W" luksFormat -q --cipher waes-xts-plain64 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --luks2-keyslots-size 4m "$work/b$i.img" "$work/p1" 2>/dev/null ||
  "$W" luksFormat -q --cipher waes-xts-plain64 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 "$work/b$i.img" "$work/p1"
done
"$W" custodian load-new-master-key >/dev/null
t0=$(now)
for i in $(seq 1 "$N"); do "$W" reencipher --staged "$work/b$i.img" --key-file "$work/p1" >/dev/null; done
t1=$(now)
tot=$(secs "$t0" "$t1")
echo "stage $N volumes in one batch (pbkdf2 1000 it.): seconds|$tot|$(python3 -c "print(f'{$tot/$N*1000:.1f}')") ms per volume|for d in IMGS; do wrapcrypt reencipher --staged \$d --key-file F; done"
