"""Finding the instructions a CPU emulator cannot run for SEAM software.

A linear capstone sweep of `.text` lists every SEAM-only, VMX or privileged instruction the module
contains. The engine hooks exactly those addresses (nothing else pays for a hook) and emulates
them with the length capstone decoded: unicorn's idea of the length is wrong for opcodes it does
not know (SEAMRET, SEAMOPS, PCONFIG). Opcodes capstone does not know either are matched by bytes.
The sweep is cached per `.text` content, so a second engine for the same binary costs nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from tdxseam.seam.real import elf

# Emulated by the engine (see engine.SeamEngine._special); anything else in SPECIAL_OTHER that the
# module reaches is reported as not emulated rather than run wrongly.
EMULATED = frozenset({
    "cpuid", "rdmsr", "wrmsr", "vmread", "vmwrite", "vmptrld", "vmptrst", "vmclear", "invept",
    "invvpid", "wbinvd", "wbnoinvd", "seamret", "seamops", "pconfig", "movdir64b", "rdrand",
    "rdseed", "ud2", "hlt",
})
NOT_EMULATED = frozenset({
    "vmlaunch", "vmresume", "tdcall", "seamcall", "xsaves", "xrstors", "encls", "loadiwkey",
})
_RAW = {  # opcodes capstone does not decode: bytes -> (mnemonic, length)
    b"\x66\x0f\x01\xcd": ("seamret", 4),
    b"\x66\x0f\x01\xce": ("seamops", 4),
    b"\x66\x0f\x01\xcc": ("tdcall", 4),
    b"\x66\x0f\x01\xcf": ("seamcall", 4),
    b"\x0f\x01\xc5": ("pconfig", 3),
}


@dataclass(frozen=True)
class Special:
    offset: int  # from the image base
    mnemonic: str
    size: int


def _sweep(text: bytes, base: int) -> tuple[Special, ...]:
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    wanted = EMULATED | NOT_EMULATED
    out: list[Special] = []
    off, n = 0, len(text)
    while off < n:
        for addr, size, mnem, _ops in cs.disasm_lite(text[off:], base + off):
            if mnem in wanted:
                out.append(Special(addr, mnem, size))
            off += size
        if off >= n:
            break
        for raw, (mnem, size) in _RAW.items():
            if text[off:off + len(raw)] == raw:
                out.append(Special(base + off, mnem, size))
                off += size
                break
        else:
            off += 1  # data or padding inside .text
    return tuple(out)


_CACHE: dict[tuple[bytes, int], tuple[Special, ...]] = {}


def special_instructions(image: bytes) -> tuple[Special, ...]:
    """Every instruction of `.text` the engine must hook, by image offset."""
    s = elf.section(image, ".text")
    text = bytes(image[s.offset:s.offset + s.size])
    key = (hashlib.sha256(text).digest(), s.addr)
    if key not in _CACHE:
        if len(_CACHE) >= 16:
            _CACHE.clear()
        _CACHE[key] = _sweep(text, s.addr)
    return _CACHE[key]


def disassemble(code: bytes, address: int) -> str:
    """One instruction as text, for error messages."""
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    for _addr, _size, mnem, ops in cs.disasm_lite(code, address, 1):
        return f"{mnem} {ops}".strip()
    for raw, (mnem, _size) in _RAW.items():
        if code.startswith(raw):
            return mnem
    return f"bytes {code[:8].hex()}"
