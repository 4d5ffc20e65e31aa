"""SHA-256/SHA-512 whose state can be saved after one part and resumed in another process.

Blob parts may reach different hold processes; proving a blob's digest in one pass means
the running hash must travel with the upload session (in Valkey). `hashlib` objects cannot
be serialized, and the `rehash` package that pickles them refuses OpenSSL 3. The FIPS 180-4
state is tiny and well defined, though: eight chaining words, the message length, and the
bytes of the unfinished block. We drive OpenSSL's public ``SHA256_*``/``SHA512_*`` functions
through ctypes (full native speed, the GIL released while hashing) and save the state in our
own portable format, so the bytes mean the same on any machine and any OpenSSL version.

Portable state: ``b"AHS1" | alg (1 byte: 1=sha256, 2=sha512) | length in bytes (u64 BE) |
chaining words (BE, 8x4 or 8x8 bytes) | pending bytes (< block size)``.

If libcrypto lacks these functions (a build without deprecated APIs), `available()` is False
and callers verify blobs by reading them back instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import struct
from typing import Any

from atcr.digest import Algorithm, check_algorithm

MAGIC = b"AHS1"
_ALG_CODE = {"sha256": 1, "sha512": 2}
_CODE_ALG: dict[int, Algorithm] = {1: "sha256", 2: "sha512"}
_BLOCK = {"sha256": 64, "sha512": 128}
_WORD = {"sha256": 4, "sha512": 8}
_DIGEST_LEN = {"sha256": 32, "sha512": 64}


class HashStateError(ValueError):
    """A saved state is corrupt, of another format, or resumable hashing is unavailable."""


class _Sha256Ctx(ctypes.Structure):
    # openssl/sha.h SHA256_CTX (unchanged from OpenSSL 0.9.8 to 3.x)
    _fields_ = (
        ("h", ctypes.c_uint32 * 8),
        ("Nl", ctypes.c_uint32),
        ("Nh", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * 64),
        ("num", ctypes.c_uint),
        ("md_len", ctypes.c_uint),
    )


class _Sha512Ctx(ctypes.Structure):
    # openssl/sha.h SHA512_CTX
    _fields_ = (
        ("h", ctypes.c_uint64 * 8),
        ("Nl", ctypes.c_uint64),
        ("Nh", ctypes.c_uint64),
        ("data", ctypes.c_uint8 * 128),
        ("num", ctypes.c_uint),
        ("md_len", ctypes.c_uint),
    )


_CTX_TYPES: dict[str, type[ctypes.Structure]] = {"sha256": _Sha256Ctx, "sha512": _Sha512Ctx}


def _load() -> dict[str, tuple[Any, Any, Any]] | None:
    names = ["libcrypto.so.3", "libcrypto.so.1.1", ctypes.util.find_library("crypto")]
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)  # CDLL releases the GIL around each call
            funcs: dict[str, tuple[Any, Any, Any]] = {}
            for alg, prefix in (("sha256", "SHA256"), ("sha512", "SHA512")):
                init, update, final = (getattr(lib, f"{prefix}_{n}") for n in ("Init", "Update", "Final"))
                init.argtypes = [ctypes.c_void_p]
                update.argtypes = None  # bytes pass as char*, ctypes arrays as pointers
                final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
                for fn in (init, update, final):
                    fn.restype = ctypes.c_int
                funcs[alg] = (init, update, final)
        except (OSError, AttributeError):
            continue
        if _self_test(funcs):
            return funcs
    return None


def _self_test(funcs: dict[str, tuple[Any, Any, Any]]) -> bool:
    """Refuse a libcrypto whose struct layout differs from the one we map (never guess)."""
    try:
        sample = bytes(range(256)) * 3
        for alg in ("sha256", "sha512"):
            first = ResumableHash(check_algorithm(alg), _funcs=funcs)
            first.update(sample[:77])
            second = ResumableHash.restore(first.save(), _funcs=funcs)
            second.update(sample[77:])
            if second.hexdigest() != hashlib.new(alg, sample).hexdigest():
                return False
        return True
    except Exception:
        return False


class ResumableHash:
    """A running SHA-256/512 that can be saved to bytes and resumed anywhere."""

    __slots__ = ("_ctx", "_funcs", "algorithm", "length")

    def __init__(self, algorithm: Algorithm, *, _funcs: dict[str, tuple[Any, Any, Any]] | None = None) -> None:
        funcs = _funcs or _require()
        self._funcs = funcs
        self.algorithm: Algorithm = algorithm
        self._ctx = _CTX_TYPES[algorithm]()
        funcs[algorithm][0](ctypes.byref(self._ctx))
        self.length = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash `data`; a large buffer is hashed natively in one call with the GIL released."""
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if not size:
            return
        buf: Any
        if isinstance(data, bytes):
            buf = data
        elif isinstance(data, bytearray) or (isinstance(data, memoryview) and not data.readonly):
            buf = (ctypes.c_char * size).from_buffer(data)  # no copy
        else:
            buf = bytes(data)
        self._funcs[self.algorithm][1](ctypes.byref(self._ctx), buf, ctypes.c_size_t(size))
        self.length += size

    def digest(self) -> bytes:
        """The digest so far; the running state is left as it was (finalising works on a copy)."""
        copy = _CTX_TYPES[self.algorithm]()
        ctypes.memmove(ctypes.byref(copy), ctypes.byref(self._ctx), ctypes.sizeof(copy))
        out = (ctypes.c_uint8 * _DIGEST_LEN[self.algorithm])()
        self._funcs[self.algorithm][2](out, ctypes.byref(copy))
        return bytes(out)

    def hexdigest(self) -> str:
        return self.digest().hex()

    def save(self) -> bytes:
        ctx: Any = self._ctx
        word = "I" if self.algorithm == "sha256" else "Q"
        words = struct.pack(f">8{word}", *ctx.h)
        pending = bytes(ctx.data)[: int(ctx.num)]
        return MAGIC + bytes([_ALG_CODE[self.algorithm]]) + struct.pack(">Q", self.length) + words + pending

    @classmethod
    def restore(cls, state: bytes, *, _funcs: dict[str, tuple[Any, Any, Any]] | None = None) -> ResumableHash:
        if len(state) < 13 or state[:4] != MAGIC or state[4] not in _CODE_ALG:
            raise HashStateError("not a saved hash state")
        algorithm = _CODE_ALG[state[4]]
        (length,) = struct.unpack(">Q", state[5:13])
        wsize = _WORD[algorithm]
        words_end = 13 + 8 * wsize
        pending = state[words_end:]
        if len(state) < words_end or len(pending) != length % _BLOCK[algorithm]:
            raise HashStateError("saved hash state is truncated or inconsistent")
        obj = cls(algorithm, _funcs=_funcs)
        ctx: Any = obj._ctx
        word = "I" if algorithm == "sha256" else "Q"
        for i, value in enumerate(struct.unpack(f">8{word}", state[13:words_end])):
            ctx.h[i] = value
        bits = length * 8
        mask = (1 << (8 * wsize)) - 1
        ctx.Nl = bits & mask
        ctx.Nh = (bits >> (8 * wsize)) & mask
        for i, b in enumerate(pending):
            ctx.data[i] = b
        ctx.num = len(pending)
        obj.length = length
        return obj


def _require() -> dict[str, tuple[Any, Any, Any]]:
    if _FUNCS is None:
        raise HashStateError("resumable hashing is unavailable: libcrypto has no SHA256_*/SHA512_* functions")
    return _FUNCS


_FUNCS = _load()


def available() -> bool:
    """Whether states can be saved and resumed here (else: verify by reading the blob back)."""
    return _FUNCS is not None
