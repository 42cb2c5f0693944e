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
say "demo finished"
