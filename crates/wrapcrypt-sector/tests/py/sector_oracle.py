#!/usr/bin/env python3
"""Independent dm-crypt sector encryption with Python `cryptography` (OpenSSL).

Reads one JSON object per line on stdin:
  {"spec": "aes-xts-plain64", "key": HEX, "sector_size": N, "iv_sector": N, "data": HEX}
and prints the ciphertext hex, one line each. Keys arrive on stdin, never argv.
IVs are computed here from dm-crypt's definitions, not taken from the engine
under test: plain (low 32 bits LE), plain64 (LE), plain64be (BE, last 8 bytes),
essiv:sha256 (AES-ECB under sha256(key) of the plain64 IV), null.
"""
import hashlib
import json
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def iv_for(ivmode, key, sector):
    if ivmode == "plain":
        return (sector & 0xFFFFFFFF).to_bytes(4, "little") + bytes(12)
    if ivmode == "plain64":
        return sector.to_bytes(8, "little") + bytes(8)
    if ivmode == "plain64be":
        return bytes(8) + sector.to_bytes(8, "big")
    if ivmode == "null":
        return bytes(16)
    if ivmode == "essiv:sha256":
        salt = hashlib.sha256(key).digest()
        e = Cipher(algorithms.AES(salt), modes.ECB()).encryptor()
        return e.update(sector.to_bytes(8, "little") + bytes(8)) + e.finalize()
    raise ValueError("unsupported IV mode " + ivmode)


def encrypt(spec, key, sector_size, iv_sector, data):
    cipher, mode, ivmode = spec.split("-", 2)
    assert cipher == "aes"
    out = bytearray()
    step = sector_size // 512
    for i in range(0, len(data), sector_size):
        sector = (iv_sector + (i // sector_size) * step) % (1 << 64)
        iv = iv_for(ivmode, key, sector)
        if mode == "xts":
            c = Cipher(algorithms.AES(key), modes.XTS(iv))
        elif mode == "cbc":
            c = Cipher(algorithms.AES(key), modes.CBC(iv))
        else:
            raise ValueError("unsupported mode " + mode)
        e = c.encryptor()
        out += e.update(data[i : i + sector_size]) + e.finalize()
    return bytes(out)


for line in sys.stdin:
    req = json.loads(line)
    ct = encrypt(
        req["spec"],
        bytes.fromhex(req["key"]),
        req["sector_size"],
        req["iv_sector"],
        bytes.fromhex(req["data"]),
    )
    print(ct.hex(), flush=True)
