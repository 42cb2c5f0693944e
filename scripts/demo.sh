#!/usr/bin/env bash
# The main job end to end on an image file, each step confirmed by cryptsetup.
set -euo pipefail
cd "$(dirname "$0")/.."
W="$PWD/target/release/wrapcrypt"
work=$(mktemp -d /tmp/wrapcrypt-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
img="$work/disk.img"
say() { printf '\n==> %s\n' "$*"; }
truncate -s 64M "$img"
fast=(--pbkdf argon2id --pbkdf-memory 65536 --pbkdf-force-iterations 4)

say "luksFormat (LUKS2, aes-xts-plain64, argon2id)"
printf 'first passphrase' | "$W" luksFormat -q "${fast[@]}" --label demo "$img" -
cryptsetup isLuks --type luks2 "$img" && echo "cryptsetup: is LUKS2"

say "luksAddKey, then unlock with both tools"
printf 'first passphrase\nsecond passphrase\n' | "$W" luksAddKey "${fast[@]}" "$img"
printf 'second passphrase' | cryptsetup open --test-passphrase "$img" && echo "cryptsetup: second passphrase opens"
printf 'first passphrase' | "$W" open --test-passphrase "$img" --key-file - && echo "wrapcrypt: first passphrase opens"

say "volume key agrees between wrapcrypt and cryptsetup"
k1=$(printf 'first passphrase' | "$W" luksDump -q --dump-volume-key --key-file - "$img" | grep -A8 'MK dump' | grep -oE '([0-9a-f]{2} ?)+' | tr -d ' \n')
k2=$(printf 'first passphrase' | cryptsetup luksDump -q --dump-volume-key --key-file - "$img" | grep -A8 'MK dump' | grep -oE '([0-9a-f]{2} ?)+' | tr -d ' \n')
[ -n "$k1" ] && [ "$k1" = "$k2" ] && echo "same volume key (${#k1} hex digits)"

say "luksRemoveKey (first), which cryptsetup then rejects"
printf 'first passphrase' | "$W" luksRemoveKey "$img" -
if printf 'first passphrase' | cryptsetup open --test-passphrase "$img" 2>/dev/null; then echo "unexpected"; exit 1; fi
echo "cryptsetup: first passphrase no longer opens"

say "header backup, damage, restore"
"$W" luksHeaderBackup "$img" --header-backup-file "$work/hdr.bak"
dd if=/dev/zero of="$img" bs=4096 count=8 conv=notrunc status=none
if "$W" isLuks "$img"; then echo "unexpected"; exit 1; fi
echo "header wiped: not LUKS any more"
"$W" luksHeaderRestore -q "$img" --header-backup-file "$work/hdr.bak"
printf 'second passphrase' | cryptsetup open --test-passphrase "$img" && echo "restored: cryptsetup opens it again"

say "open as a block device, make a filesystem, write"
mnt="$work/mnt"; mkdir -p "$mnt"
cleanup() { umount "$mnt" 2>/dev/null || true; "$W" close wcdemo 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
printf 'second passphrase' | "$W" open "$img" wcdemo --key-file -
"$W" status wcdemo
mkfs.ext4 -q /dev/mapper/wcdemo
mount /dev/mapper/wcdemo "$mnt"
head -c 8M /dev/urandom > "$mnt/payload.bin"
sum1=$(sha256sum "$mnt/payload.bin" | cut -d' ' -f1)
umount "$mnt"
"$W" close wcdemo
echo "written and closed; payload sha256 $sum1"

say "reopen, verify, fsck"
printf 'second passphrase' | "$W" open "$img" wcdemo --key-file -
fsck.ext4 -n /dev/mapper/wcdemo
mount /dev/mapper/wcdemo "$mnt"
sum2=$(sha256sum "$mnt/payload.bin" | cut -d' ' -f1)
umount "$mnt"
"$W" close wcdemo
[ "$sum1" = "$sum2" ] && echo "payload intact after reopen: $sum2"

say "the ciphertext decrypts with an independent AES-XTS (Python cryptography) under cryptsetup's key"
key=$(printf 'second passphrase' | cryptsetup luksDump -q --dump-volume-key --key-file - "$img" | grep -A8 'MK dump' | grep -oE '([0-9a-f]{2} ?)+' | tr -d ' \n')
off=$(cryptsetup luksDump "$img" | awk '/offset:/ {print $2; exit}')
python3 - "$img" "$key" "$off" <<'PY'
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
img, key, off = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3])
with open(img, 'rb') as f:
    f.seek(off); ct = f.read(4096)
d = Cipher(algorithms.AES(key), modes.XTS((0).to_bytes(16, 'little'))).decryptor()
pt = d.update(ct) + d.finalize()
assert pt[1024+56:1024+58] == b'\x53\xef', 'no ext4 superblock'
print('ext4 superblock found in independently decrypted sector 0')
PY

say "luksDump"
"$W" luksDump "$img"

# ---------------------------------------------------------------------------
# The main job on the embedded default: a wrapped-key (waes) volume whose
# effective key lives only in wrapcrypt-custodiand, started on demand, with
# its master keys sealed by a TPM 2.0 (swtpm here, as no TPM exists).
say "start swtpm and a private key custodian (master keys sealed by the TPM)"
port=$(( 30000 + RANDOM % 20000 ))
mkdir -p "$work/tpm"
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --server type=tcp,port=$port \
  --ctrl type=tcp,port=$((port+1)) --flags not-need-init,startup-clear &
tpm_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export WRAPCRYPT_CUSTODIAN_SOCKET="$work/custodian/c.sock" WRAPCRYPT_CUSTODIAN_TCTI="swtpm:port=$port"
mkdir -p "$work/custodian"
cleanup() {
  umount "$mnt" 2>/dev/null || true
  "$W" close wcdemo 2>/dev/null || true
  pkill -TERM -f "wrapcrypt-custodiand.*$work/custodian" 2>/dev/null || true
  kill "$tpm_pid" 2>/dev/null || true
  sleep 0.3
  rm -rf "$work"
}
trap cleanup EXIT
"$W" custodian status

say "luksFormat --cipher waes-xts-plain64: the key is generated inside the custodian"
wimg="$work/wrapped.img"; truncate -s 64M "$wimg"
printf 'wrapped passphrase' | "$W" luksFormat -q "${fast[@]}" --cipher waes-xts-plain64 "$wimg" -
cryptsetup luksDump "$wimg" | sed -n '/Data segments/,/sector/p;/Tokens/,/Digests/p'
"$W" luksDump "$wimg" | sed -n '/^Wrapped key/,$p'

say "open the wrapped volume, make a filesystem, write, close, reopen, verify"
printf 'wrapped passphrase' | "$W" open "$wimg" wcdemo --key-file -
"$W" status wcdemo
mkfs.ext4 -q /dev/mapper/wcdemo
mount /dev/mapper/wcdemo "$mnt"
head -c 8M /dev/urandom > "$mnt/payload.bin"
w1=$(sha256sum "$mnt/payload.bin" | cut -d' ' -f1)
umount "$mnt"; "$W" close wcdemo
printf 'wrapped passphrase' | "$W" open "$wimg" wcdemo --key-file -
fsck.ext4 -n /dev/mapper/wcdemo
mount /dev/mapper/wcdemo "$mnt"
w2=$(sha256sum "$mnt/payload.bin" | cut -d' ' -f1)
umount "$mnt"; "$W" close wcdemo
[ "$w1" = "$w2" ] && echo "wrapped volume: payload intact after reopen: $w2"

say "what a stolen header gives away: cryptsetup's volume key of a waes volume is only the wrapped blob"
printf 'wrapped passphrase' | cryptsetup luksDump -q --dump-volume-key --key-file - "$wimg" | grep -A2 'MK bits'
say "demo finished"
