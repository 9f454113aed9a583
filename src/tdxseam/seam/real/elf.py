"""The little of ELF64 a loader needs from a TDX module binary: sections and RELATIVE relocations.

A module `.bin` is an ELF image linked at address 0 and loaded flat (file offset = address). The
P-SEAMLDR adds the code region's linear base to every R_X86_64_RELATIVE slot; the module has no
other relocation type. Parsing is bounded by the file: a bad header is an `ElfError`, not a crash.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_RELA = struct.Struct("<QQq")
SHT_RELA = 4
R_X86_64_RELATIVE = 8


class ElfError(ValueError):
    """The module binary is not the ELF64 image a loader expects."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    addr: int
    offset: int
    size: int


def sections(image: bytes) -> list[Section]:
    if len(image) < _EHDR.size or image[:4] != b"\x7fELF" or image[4] != 2:
        raise ElfError("not an ELF64 image")
    (_ident, _type, _mach, _ver, _entry, _phoff, shoff, _flags, _ehsize, _phentsize, _phnum,
     shentsize, shnum, shstrndx) = _EHDR.unpack_from(image, 0)
    if shentsize != _SHDR.size or shoff + shnum * shentsize > len(image) or shstrndx >= shnum:
        raise ElfError("section header table out of bounds")
    raw = [_SHDR.unpack_from(image, shoff + i * shentsize) for i in range(shnum)]
    strtab = raw[shstrndx]
    names = image[strtab[4]:strtab[4] + strtab[5]]
    out = []
    for name_off, stype, _fl, addr, offset, size, *_rest in raw:
        end = names.find(b"\0", name_off)
        out.append(Section(names[name_off:end].decode("ascii", "replace"), stype, addr, offset, size))
    return out


def section(image: bytes, name: str) -> Section:
    for s in sections(image):
        if s.name == name:
            if s.offset + s.size > len(image):
                raise ElfError(f"section {name} out of bounds")
            return s
    raise ElfError(f"no {name} section")


def relative_relocations(image: bytes) -> list[tuple[int, int]]:
    """(offset, addend) of every RELATIVE relocation; any other type is an error."""
    out = []
    for s in sections(image):
        if s.type != SHT_RELA:
            continue
        if s.offset + s.size > len(image):
            raise ElfError(f"relocation section {s.name} out of bounds")
        for off in range(s.offset, s.offset + s.size - _RELA.size + 1, _RELA.size):
            r_offset, r_info, addend = _RELA.unpack_from(image, off)
            if r_info != R_X86_64_RELATIVE:
                raise ElfError(f"relocation type {r_info & 0xFFFFFFFF} at {r_offset:#x} is not RELATIVE")
            out.append((r_offset, addend))
    return out
