"""The build constants a TDX module binary carries: build date, build number, minor and major.

TDH.SYS.INFO fills a TDSYSINFO_STRUCT whose bytes 8..0x13 are {u32 build_date (decimal
yyyymmdd), u16 build_num, u16 minor_version, u16 major_version}; the module's code holds those
compile-time constants in one of two findable forms (spec-formats "Version information"):

- "immediates": the 1.5 and 2.0 builds load {build_date, build_num, minor} as the 64-bit
  immediate of one `movabs` (REX.W B8+r), store it at [base+8] and set the u16 major at
  [base+0x10] right after:  48 B8 imm64 / 4x 89 xx 08 / 66 4x C7 xx 10 imm16 (same base);
- "rodata": later clang builds copy the ten bytes {build_date, build_num, minor, major} from a
  table in a `.rodata` section instead.

Both are searched; what is found must agree (two different answers are a FormatError, never a
silent pick). The update number is not among these constants: it reaches a host only through
TDH.SYS.RD, so identity takes it from the file name, the mapping file or the operator.
"""

from __future__ import annotations

import re
import struct

from tdxseam.formats.errors import FormatError
from tdxseam.formats.record import record

FORM_IMMEDIATES = "immediates"
FORM_RODATA = "rodata"
FORM_TEXT = {
    FORM_IMMEDIATES: "the TDH.SYS.INFO immediates",
    FORM_RODATA: "a .rodata table",
}

# The sequence is found by its one fixed byte pair, the store's disp8 (08) followed by the 66
# prefix of the next instruction; the movabs starts 13 bytes before it. A compiled pattern finds
# the pair about 2.5x quicker than bytes.find (which, for a two-byte needle, steps byte by byte).
_ANCHOR = b"\x08\x66"
_ANCHOR_RE = re.compile(re.escape(_ANCHOR))
_ANCHOR_AT = 13
# The top two bytes of a yyyymmdd in 2015-2099 are 01 33..01 40. The section is searched with its
# bytes 33..40 all read as 33 (a translated copy, same offsets), so the pattern is a plain pair,
# which a compiled pattern finds ~3x quicker than the byte class [33-40] followed by 01.
_DATE_TOP = re.compile(rb"\x33\x01")
_DATE_TOP_TABLE = bytes(0x33 if 0x33 <= b <= 0x40 else b for b in range(256))
_RECORD = struct.Struct("<IHHH")  # build_date, build_num, minor, major (the .rodata form)
_MAX_MAJOR = 15
_MAX_MINOR = 99


@record(frozen=True)
class BuildConstants:
    build_date: int  # decimal yyyymmdd, as TDH.SYS.RD reports it
    build_num: int
    minor: int
    major: int
    form: str  # FORM_IMMEDIATES or FORM_RODATA
    offset: int  # file offset of the immediate or of the table

    @property
    def date_text(self) -> str:
        d = f"{self.build_date:08d}"
        return f"{d[0:4]}-{d[4:6]}-{d[6:8]}"

    @property
    def facts(self) -> tuple[int, int, int, int]:
        return (self.major, self.minor, self.build_num, self.build_date)


def valid_build_date(value: int) -> bool:
    """A decimal yyyymmdd between 2015 and 2099 with a real month and day."""
    year, md = divmod(value, 10000)
    month, day = divmod(md, 100)
    return 2015 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31


def _plausible(date: int, build: int, minor: int, major: int) -> bool:
    return valid_build_date(date) and 0 < build < 0xFFFF and minor <= _MAX_MINOR and 1 <= major <= _MAX_MAJOR


def _store_after_movabs(code: bytes, at: int, reg: int) -> tuple[int, int] | None:
    """(major, base register) if `code[at:]` stores rax-reg at [base+8] then an imm16 at [base+0x10]."""
    if at + 4 > len(code):
        return None
    rex, op, modrm, disp = code[at], code[at + 1], code[at + 2], code[at + 3]
    # mov [base+disp8], r64: REX.W(+R for r8-r15)(+B for a base in r8-r15), 89, mod=01
    if rex & 0xF8 != 0x48 or op != 0x89 or modrm >> 6 != 1 or disp != 0x08:
        return None
    if ((rex >> 2) & 1) << 3 | (modrm >> 3) & 7 != reg or modrm & 7 == 4:  # the movabs register; no SIB
        return None
    base = (rex & 1) << 3 | modrm & 7
    at += 4
    # mov word [base+0x10], imm16: 66 [REX.B] C7 /0 disp8 imm16
    if at + 7 > len(code) or code[at] != 0x66:
        return None
    at += 1
    rex_b = 0
    if code[at] & 0xF0 == 0x40:
        rex_b = code[at] & 1
        at += 1
    if at + 5 > len(code) or code[at] != 0xC7:
        return None
    modrm2, disp2 = code[at + 1], code[at + 2]
    if modrm2 >> 6 != 1 or (modrm2 >> 3) & 7 != 0 or disp2 != 0x10 or (rex_b << 3 | modrm2 & 7) != base:
        return None
    return struct.unpack_from("<H", code, at + 3)[0], base


def find_immediates(code: bytes) -> list[BuildConstants]:
    out = []
    for hit in _ANCHOR_RE.finditer(code, _ANCHOR_AT):  # two hits never overlap (08 66 08 66)
        i = hit.start() - _ANCHOR_AT
        # movabs r64, imm64: REX.W (48) or REX.WB (49), B8+r
        if code[i] not in (0x48, 0x49) or not 0xB8 <= code[i + 1] <= 0xBF:
            continue
        date, build, minor = struct.unpack_from("<IHH", code, i + 2)
        if not valid_build_date(date):
            continue
        reg = (code[i] & 1) << 3 | (code[i + 1] - 0xB8)
        found = _store_after_movabs(code, i + 10, reg)
        if found is None:
            continue
        major, _base = found
        if _plausible(date, build, minor, major):
            out.append(BuildConstants(date, build, minor, major, FORM_IMMEDIATES, i + 2))
    return out


def rodata_ranges(module: bytes) -> list[tuple[int, int]]:
    """File ranges of an ELF64 little-endian file's `.rodata*` sections ([] for anything else)."""
    if len(module) < 64 or module[:4] != b"\x7fELF" or module[4] != 2 or module[5] != 1:
        return []
    shoff = struct.unpack_from("<Q", module, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", module, 0x3A)
    if shentsize != 64 or not shnum or shstrndx >= shnum or shoff + shnum * 64 > len(module):
        return []
    sections = [struct.unpack_from("<IIQQQQIIQQ", module, shoff + k * 64) for k in range(shnum)]
    str_off, str_size = sections[shstrndx][4], sections[shstrndx][5]
    if str_off + str_size > len(module):
        return []
    names = module[str_off:str_off + str_size]
    out = []
    for name_off, sh_type, _flags, _addr, off, size, *_ in sections:
        end = names.find(b"\0", name_off)
        name = names[name_off:end if end >= 0 else None]
        # SHT_PROGBITS only, inside the file
        if sh_type == 1 and (name == b".rodata" or name.startswith(b".rodata.")) and off + size <= len(module):
            out.append((off, off + size))
    return out


def find_rodata(module: bytes) -> list[BuildConstants]:
    out = []
    for start, end in rodata_ranges(module):
        # jump from hit to hit of the date's top bytes (see _DATE_TOP)
        section = module[start:end].translate(_DATE_TOP_TABLE)
        for m in _DATE_TOP.finditer(section, 2):
            off = start + m.start() - 2
            if off % 2 or off + _RECORD.size > end:
                continue
            date = struct.unpack_from("<I", module, off)[0]
            if not valid_build_date(date):
                continue
            _d, build, minor, major = _RECORD.unpack_from(module, off)
            if _plausible(date, build, minor, major):
                out.append(BuildConstants(date, build, minor, major, FORM_RODATA, off))
    return out


def find_build_constants(module: bytes) -> BuildConstants | None:
    """The binary's build constants, from whichever form it uses; None if neither is found.

    FormatError (code "build_constants") when the binary holds two different answers.
    """
    module = bytes(module)
    hits = find_immediates(module) + find_rodata(module)
    if not hits:
        return None
    distinct = {h.facts for h in hits}
    if len(distinct) > 1:
        a, b = hits[0], next(h for h in hits if h.facts != hits[0].facts)
        raise FormatError(
            "module binary", f"two different build constants: {_describe(a)} at 0x{a.offset:x} and "
            f"{_describe(b)} at 0x{b.offset:x}", code="build_constants")
    return hits[0]


def _describe(c: BuildConstants) -> str:
    return f"{c.major}.{c.minor} build {c.build_num} ({c.date_text}, {FORM_TEXT[c.form]})"


# -- making binaries that carry them (synthetic test modules) -------------------------------------


def immediates_code(build_date: int, build_num: int, minor: int, major: int) -> bytes:
    """The instruction sequence of the immediates form, storing through r14 as Intel's builds do."""
    return (b"\x48\xb8" + struct.pack("<IHH", build_date, build_num, minor)
            + b"\x49\x89\x46\x08" + b"\x66\x41\xc7\x46\x10" + struct.pack("<H", major))


def rodata_record(build_date: int, build_num: int, minor: int, major: int) -> bytes:
    return _RECORD.pack(build_date, build_num, minor, major)
