#!/usr/bin/env python3
"""Serpent and Twofish sector encryption with libgcrypt (one of cryptsetup's
crypto backends, whose Serpent uses the kernel's byte order), through ctypes.

Reads one JSON object per line on stdin:
  {"spec": "serpent-xts-plain64", "key": HEX, "sector_size": N, "iv_sector": N, "data": HEX}
and prints the ciphertext hex, one line each (keys arrive on stdin, never
argv). Modes: xts-plain64 and cbc-plain64 (IV = 64-bit little-endian sector
number, advancing by sector_size / 512 per sector), ecb. Prints "skip" and
exits 0 when libgcrypt cannot be loaded.
"""
import ctypes
import ctypes.util
import json
import sys

MODE = {"ecb": 1, "cbc": 3, "xts": 13}
SERPENT = {16: 304, 24: 305, 32: 306}
TWOFISH = {16: 303, 32: 10}


def load():
    name = ctypes.util.find_library("gcrypt") or "libgcrypt.so.20"
    try:
        g = ctypes.CDLL(name)
    except OSError:
        return None
    g.gcry_check_version.restype = ctypes.c_char_p
    if not g.gcry_check_version(b"1.8.0"):
        return None
    return g


def check(rc, what):
    if rc != 0:
        raise SystemExit(f"libgcrypt {what} failed: {rc}")


def encrypt(g, spec, key, sector_size, iv_sector, data):
    cipher, mode = spec.split("-")[:2]
    block_key = len(key) // 2 if mode == "xts" else len(key)
    algo = (SERPENT if cipher == "serpent" else TWOFISH)[block_key]
    h = ctypes.c_void_p()
    check(g.gcry_cipher_open(ctypes.byref(h), algo, MODE[mode], 0), "open")
    check(g.gcry_cipher_setkey(h, key, len(key)), "setkey")
    out = bytearray()
    unit = sector_size if mode != "ecb" else len(data)
    for i in range(0, len(data), unit):
        buf = ctypes.create_string_buffer(data[i : i + unit], unit)
        if mode != "ecb":
            sector = (iv_sector + (i // unit) * (sector_size // 512)) % (1 << 64)
            iv = sector.to_bytes(8, "little") + bytes(8)
            check(g.gcry_cipher_setiv(h, iv, 16), "setiv")
        check(g.gcry_cipher_encrypt(h, buf, unit, None, 0), "encrypt")
        out += buf.raw
    g.gcry_cipher_close(h)
    return bytes(out)


def main():
    g = load()
    if g is None:
        print("skip")
        return
    for line in sys.stdin:
        c = json.loads(line)
        ct = encrypt(
            g,
            c["spec"],
            bytes.fromhex(c["key"]),
            c["sector_size"],
            c["iv_sector"],
            bytes.fromhex(c["data"]),
        )
        print(ct.hex(), flush=True)


main()
