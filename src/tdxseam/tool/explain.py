"""`tdxseam explain`: name status codes, leaf numbers and field ids, and read a kernel log.

For each `SEAMCALL (0x...) failed: 0x...` line (and the register lines the kernel prints after it)
and each other TDX or P-SEAMLDR line it knows, an `Item` says: the leaf and which firmware answers
it, the status with its class and details, the errno the kernel made of it, what that means at that
point of boot or update, usual causes and what to do, with the source. Everything decoded comes from
`tdxseam.formats`; the prose from `explain_kb`. Text taken from the input is escaped before printing.
"""

from __future__ import annotations

import errno as _errno
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from tdxseam.formats.leaves import LEAF_SOURCES, SEAMLDR_LEAF_BIT, SeamldrLeaf, leaf_firmware, leaf_name
from tdxseam.formats.metadata import decode_field_id
from tdxseam.formats.status import DecodedStatus, decode_status, seamcall_errno
from tdxseam.formats.status_table import KERNEL_SW_STATUSES, SEAMLDR_STATUS_MEANING
from tdxseam.tool.explain_kb import GENERIC_LEAF, LEAF_CONTEXT, MESSAGES, STATUS_ADVICE, Advice

MAX_INPUT = 16 << 20  # bytes of log text read from stdin or a file
MAX_LINE = 4096  # longer lines are cut before matching

_PREFIXES = ("virt/tdx: ", "seamldr: ", "tdx: ", "tdx_host: ", "tdx-host: ")
_FAIL_RE = re.compile(r"SEAMCALL \((0x[0-9a-fA-F]{1,16}|\d{1,20})\) failed: (0x[0-9a-fA-F]{1,16})")
_REG_RE = re.compile(r"\b(RCX|RDX|R08|R8|R09|R9|R10|R11) (0x[0-9a-fA-F]{1,16})\b")
_DMESG_TS = re.compile(r"^\s*\[\s*\d+\.\d+\]\s?")


def escape(text: str) -> str:
    """Printable ASCII as is; everything else (terminal escapes, control bytes) as \\xNN / \\uNNNN."""
    out = []
    for ch in text:
        o = ord(ch)
        if 0x20 <= o < 0x7F or ch == "\t":
            out.append(ch)
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def errno_json(err: int) -> dict[str, Any]:
    return {"value": err, "name": _errno.errorcode.get(-err, "?") if err else None}


def _errno_text(err: int) -> str:
    return "0" if not err else f"-{_errno.errorcode.get(-err, '?')} ({err})"


# -- pieces ------------------------------------------------------------------------------------------


def leaf_info(rax: int) -> dict[str, Any]:
    rax &= (1 << 64) - 1
    name = leaf_name(rax)
    if rax & SEAMLDR_LEAF_BIT:
        known = rax in SeamldrLeaf._value2member_map_
        sources = "P-SEAMLDR" if known else ""
    else:
        known = (rax & 0xFFFF) in LEAF_SOURCES and not rax >> 24
        sources = LEAF_SOURCES.get(rax & 0xFFFF, "")
    return {"value": f"0x{rax:016x}", "name": name, "known": known, "firmware": leaf_firmware(rax),
            "version": (rax >> 16) & 0xFF if not rax & SEAMLDR_LEAF_BIT else None, "sources": sources}


def status_info(st: DecodedStatus) -> dict[str, Any]:
    return {"value": f"0x{st.value:016x}", "name": st.name, "aliases": list(st.aliases), "known": st.known,
            "family": st.family, "error": st.error, "non_recoverable": st.non_recoverable,
            "fatal": st.fatal, "class": st.status_class, "class_name": st.class_name,
            "detail_l1": st.detail_l1, "detail_l2": f"0x{st.detail_l2:x}", "operand": st.operand,
            "sources": st.sources}


def advice_for(st: DecodedStatus) -> Advice:
    for name in (st.name, *st.aliases):
        if name in STATUS_ADVICE:
            return STATUS_ADVICE[name]
    if st.family == "seamldr" and st.name in SEAMLDR_STATUS_MEANING:
        return Advice(SEAMLDR_STATUS_MEANING[st.name], source="spec-firmware.md §3")
    if st.family == "software":
        for name, _, how in KERNEL_SW_STATUSES:
            if name == st.name:
                return Advice(how, source="spec-linux.md §2")
    if not st.known:
        return Advice(f"a status in no published table (class 0x{st.status_class:02x}: {st.class_name}); "
                      "every field is decoded above", source="")
    return Advice(f"a {st.class_name} status; see Intel's TDX module ABI specification for the leaf",
                  source="intel/tdx-module tdx_error_codes_defs.h")


def cpuid_details(regs: dict[str, int]) -> dict[str, Any] | None:
    """TDX_INCORRECT_CPUID_VALUE's output registers (tdh_sys_init.c): RCX leaf (31:0) and subleaf
    (63:32); RDX/R8 the mask of EAX,EBX / ECX,EDX; R9/R10 the required value, same layout."""
    need = ("RCX", "RDX", "R08", "R09", "R10")
    if not all(r in regs for r in need):
        return None

    def split(lo: int, hi: int) -> dict[str, str]:
        return {"eax": f"0x{lo & 0xFFFFFFFF:08x}", "ebx": f"0x{lo >> 32:08x}",
                "ecx": f"0x{hi & 0xFFFFFFFF:08x}", "edx": f"0x{hi >> 32:08x}"}

    return {"leaf": f"0x{regs['RCX'] & 0xFFFFFFFF:x}", "subleaf": f"0x{regs['RCX'] >> 32:x}",
            "mask": split(regs["RDX"], regs["R08"]), "expected": split(regs["R09"], regs["R10"])}


# -- items ---------------------------------------------------------------------------------------------


@dataclass
class Item:
    kind: str  # "seamcall_failure", "message", "status", "leaf", "field", "unknown"
    verdict: str  # "ok", "info", "warn", "error", "unknown"
    known: bool
    line: int | None = None
    text: str | None = None  # the input line, escaped
    leaf: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    errno: dict[str, Any] | None = None
    registers: dict[str, str] | None = None
    cpuid: dict[str, Any] | None = None
    field: dict[str, Any] | None = None
    phase: str | None = None  # "boot" or "runtime"
    role: str = ""
    consequence: str = ""
    meaning: str = ""
    causes: list[str] = dc_field(default_factory=list)
    actions: list[str] = dc_field(default_factory=list)
    sources: list[str] = dc_field(default_factory=list)
    notes: list[str] = dc_field(default_factory=list)  # what the input lacks to say more

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def render(self) -> str:
        head = {"seamcall_failure": "SEAMCALL failure", "message": "kernel message", "status": "status",
                "leaf": "leaf", "field": "metadata field id", "unknown": "not recognised"}[self.kind]
        where = f" (line {self.line})" if self.line is not None else ""
        text = (self.text or "").replace("\n", "\n" + " " * 11)
        out = [f"{head}{where}: {text}" if self.text is not None else f"{head}:"]

        def row(label: str, value: str) -> None:
            if value:
                out.append(f"  {label:<9}{value}")

        if self.leaf:
            lf = self.leaf
            ver = f", version {lf['version']}" if lf.get("version") else ""
            src = f"; defined in {lf['sources']}" if lf["sources"] else "; in no published leaf list"
            row("leaf", f"{lf['value']} {lf['name']}, answered by the {lf['firmware']} "
                        f"(RAX bit 63 {'set' if lf['firmware'] == 'P-SEAMLDR' else 'clear'}){ver}{src}")
        if self.status:
            s = self.status
            bits = [f"class 0x{s['class']:02x} ({s['class_name']})"] if s["family"] != "seamldr" else ["P-SEAMLDR status"]
            if s["non_recoverable"]:
                bits.append("non-recoverable")
            if s["fatal"]:
                bits.append("fatal")
            if s["family"] == "tdx":
                bits.append(f"details L1 0x{s['detail_l1']:02x}, L2 {s['detail_l2']}")
            if s["operand"]:
                bits.append(f"operand {s['operand']}")
            alias = f" (also {', '.join(s['aliases'])})" if s["aliases"] else ""
            src = f"; defined in {s['sources']}" if s["sources"] else "; UNKNOWN: in no published table"
            row("status", f"{s['value']} {s['name']}{alias}: {', '.join(bits)}{src}")
        if self.errno is not None and self.errno["value"] is not None:
            row("errno", _errno_text(self.errno["value"]) + " (what the kernel returns to its caller)")
        if self.registers:
            row("regs", " ".join(f"{k}={v}" for k, v in self.registers.items()))
        if self.cpuid:
            c = self.cpuid
            m, e = c["mask"], c["expected"]
            row("cpuid", f"leaf {c['leaf']} subleaf {c['subleaf']}: mask EAX {m['eax']} EBX {m['ebx']} "
                         f"ECX {m['ecx']} EDX {m['edx']}; required EAX {e['eax']} EBX {e['ebx']} "
                         f"ECX {e['ecx']} EDX {e['edx']}")
        if self.field:
            f = self.field
            row("field", f"{f['field_id']} {f['name'] or '(name unknown)'}: class {f['class']}, "
                         f"element size {f['element_size']} B, field code 0x{f['field_code']:x}"
                         f"{', non-architectural' if f['non_arch'] else ''}")
        row("role", self.role)
        row("when", f"{self.phase}: {self.consequence}" if self.phase and self.consequence else self.consequence)
        row("means", self.meaning)
        for c in self.causes:
            row("cause", c)
        for a in self.actions:
            row("do", a)
        for n in self.notes:
            row("note", n)
        row("source", "; ".join(dict.fromkeys(s for s in self.sources if s)))
        return "\n".join(out)


def _leaf_context(name: str):
    return LEAF_CONTEXT.get(name, GENERIC_LEAF if not name.startswith("P_SEAMLDR") else None)


def explain_failure(leaf: int, status: int, regs: dict[str, int], *, phase: str | None,
                    line: int | None = None, text: str | None = None) -> Item:
    """One printed SEAMCALL failure: leaf, status, errno, registers and what it means."""
    st = decode_status(status)
    li = leaf_info(leaf)
    err = seamcall_errno(st.value)
    adv = advice_for(st)
    ctx = _leaf_context(li["name"])
    if ctx is not None and phase is None:
        phase = "runtime" if ctx.runtime_only else ("boot" if ctx.boot_only else None)
    consequence = ""
    if ctx is not None:
        consequence = (ctx.runtime if phase == "runtime" else ctx.boot if phase == "boot"
                       else "; ".join(p for p in (f"at boot: {ctx.boot}" if ctx.boot else "",
                                                  f"at runtime: {ctx.runtime}" if ctx.runtime else "") if p))
    item = Item("seamcall_failure", "error", li["known"] and st.known, line, text, li, status_info(st),
                errno_json(err), {k: f"0x{v:016x}" for k, v in regs.items()} or None, phase=phase,
                role=ctx.role if ctx else "", consequence=consequence, meaning=adv.meaning,
                causes=list(adv.causes), actions=list(adv.actions),
                sources=[adv.source, ctx.source if ctx else ""])
    if st.name == "TDX_INCORRECT_CPUID_VALUE":
        item.cpuid = cpuid_details(regs)
        if item.cpuid is None:
            item.notes.append("the kernel printed no output registers for this call, so the CPUID leaf "
                               "is not in the log (only TDH.SYS.RD failures carry register lines)")
    if li["name"] == "TDH_SYS_RD" and "RDX" in regs:
        item.field = decode_field_id(regs["RDX"])
    if not st.known:
        item.verdict = "error"
    return item


def explain_value(text: str, kind: str | None = None) -> list[Item]:
    """A number on the command line: every reading of it that fits (or only `kind`)."""
    raw = text.strip()
    named = _by_name(raw)
    if named is not None and kind is None:
        kind, v = named
        raw = f"{raw} (0x{v:x})"
        return explain_value(f"0x{v:x}", kind)
    try:
        if raw.lower().startswith("0x"):
            v = int(raw, 16)
        elif raw.isdigit():
            v = int(raw, 10)
        else:
            v = int(raw, 16)
    except ValueError:
        return [Item("unknown", "unknown", False, text=escape(raw), meaning="not a number, a kernel log line tdxseam "
                     "knows, or a known name")]
    if not 0 <= v < 1 << 64:
        return [Item("unknown", "unknown", False, text=escape(raw), meaning="not a 64-bit value")]
    kinds = [kind] if kind else _guess_kinds(v)
    out: list[Item] = []
    for k in kinds:
        if k == "status":
            st = decode_status(v)
            adv = advice_for(st)
            err = seamcall_errno(v)
            out.append(Item("status", "ok" if not st.error else "error", st.known, text=escape(raw),
                            status=status_info(st), errno=errno_json(err), meaning=adv.meaning,
                            causes=list(adv.causes), actions=list(adv.actions), sources=[adv.source]))
        elif k == "leaf":
            li = leaf_info(v)
            ctx = _leaf_context(li["name"])
            out.append(Item("leaf", "info", li["known"], text=escape(raw), leaf=li,
                            role=ctx.role if ctx else "",
                            consequence="; ".join(p for p in (f"failure at boot: {ctx.boot}" if ctx and ctx.boot else "",
                                                             f"failure at runtime: {ctx.runtime}" if ctx and ctx.runtime else "") if p),
                            sources=[ctx.source if ctx else ""]))
        elif k == "field":
            f = decode_field_id(v)
            out.append(Item("field", "info", f["name"] is not None, text=escape(raw), field=f,
                            meaning="a TDX module global metadata field id (TDH.SYS.RD)",
                            sources=["spec-firmware.md §11; upstream tdx_global_metadata.c"]))
    if len(out) > 1 and any(i.known for i in out):
        out = [i for i in out if i.known]  # of several readings, the ones a table knows
    return out


def _by_name(name: str) -> tuple[str, int] | None:
    """A status or leaf given by name (TDX_SYS_BUSY, EBADHASH, TDH.SYS.INIT, P_SEAMLDR_INSTALL)."""
    from tdxseam.formats.leaves import TdxLeaf
    from tdxseam.formats.status import SeamldrStatus
    from tdxseam.formats.status_table import KERNEL_NAMES, TDX_MODULE_STATUSES

    key = name.upper().replace(".", "_")
    for n, v, _ in TDX_MODULE_STATUSES:
        if n == key:
            return "status", v
    for v, n in KERNEL_NAMES.items():
        if n == key:
            return "status", v
    for n, v, _ in KERNEL_SW_STATUSES:
        if n == key:
            return "status", v
    if key in SeamldrStatus.__members__:
        return "status", int(SeamldrStatus[key])
    if key in TdxLeaf.__members__:
        return "leaf", int(TdxLeaf[key])
    if key in SeamldrLeaf.__members__:
        return "leaf", int(SeamldrLeaf[key])
    return None


def _guess_kinds(v: int) -> list[str]:
    """Statuses keep bits 59:48 zero; field ids carry their class there; leaves are small (or a
    P-SEAMLDR leaf: bit 63 and a byte). Values that fit several readings get each."""
    if (v >> 48) & 0xFFF:
        return ["field"]
    if v < 1 << 24:
        return ["leaf", "status"] if v == 0 else ["leaf"]
    if v & SEAMLDR_LEAF_BIT and v & ~SEAMLDR_LEAF_BIT <= 0xFF:
        return ["status", "leaf"]
    return ["status"]


# -- kernel logs -----------------------------------------------------------------------------------


def _strip(line: str) -> str:
    """Drop a dmesg timestamp and syslog/journal prefixes before the printk prefix."""
    line = _DMESG_TS.sub("", line)
    for p in _PREFIXES:
        i = line.find(p)
        if i >= 0:
            return line[i:]
    i = line.find("SEAMCALL (")
    if i >= 0:
        return line[i:]
    i = line.find("WARNING: ")
    return line[i:] if i >= 0 else line


def _body(stripped: str) -> str:
    for p in _PREFIXES:
        if stripped.startswith(p):
            return stripped[len(p):]
    return stripped


def explain_log(text: str) -> list[Item]:
    """Every TDX / P-SEAMLDR line of a kernel log that tdxseam knows, in order."""
    lines = text.splitlines()
    items: list[Item] = []
    phase = "boot"
    i = 0
    while i < len(lines):
        raw = lines[i][:MAX_LINE]
        s = _strip(raw)
        m = _FAIL_RE.search(s)
        if m:
            leaf = int(m.group(1), 16) if m.group(1).startswith("0x") else int(m.group(1))
            status = int(m.group(2), 16)
            regs: dict[str, int] = {}
            j = i + 1
            while j < len(lines) and j <= i + 2:
                rs = _strip(lines[j][:MAX_LINE])
                found = _REG_RE.findall(rs)
                if not found or _FAIL_RE.search(rs):
                    break
                for name, val in found:
                    regs[{"R8": "R08", "R9": "R09"}.get(name, name)] = int(val, 16)
                j += 1
            name = leaf_name(leaf)
            if name in ("TDH_SYS_SHUTDOWN", "P_SEAMLDR_INSTALL", "TDH_SYS_UPDATE"):
                phase = "runtime"
            item = explain_failure(leaf, status, regs, phase=phase, line=i + 1, text=escape(s))
            if item.registers is not None:
                item.text = "\n".join(escape(_strip(x[:MAX_LINE])) for x in lines[i:j])
            items.append(item)
            i = j
            continue
        body = _body(s)
        for msg in MESSAGES:
            if re.search(msg.pattern, body.rstrip()) and (s != body or body.startswith("WARNING: ")):
                items.append(Item("message", msg.verdict, True, i + 1, escape(s), meaning=msg.meaning,
                                  actions=list(msg.actions), sources=[msg.source], phase=phase))
                if msg.verdict == "ok" and "initialized" in body:
                    phase = "runtime"
                break
        else:
            if s != body and s.startswith(("virt/tdx: ", "seamldr: ")):
                # a line of the TDX files that no table here describes: shown, not explained
                items.append(Item("message", "unknown", False, i + 1, escape(s), phase=phase,
                                  meaning="a TDX host kernel line tdxseam does not know"))
        i += 1
    return items


def looks_like_log(args: list[str]) -> bool:
    return any("SEAMCALL" in a or any(p.strip() in a for p in _PREFIXES) or " " in a.strip() for a in args)


def explain_args(args: list[str]) -> list[Item]:
    """Command-line words: `kind=value` or a bare value each; whole log lines if they look like text."""
    if looks_like_log(args):
        return explain_log("\n".join(args))
    out: list[Item] = []
    for a in args:
        kind = None
        if "=" in a:
            k, _, v = a.partition("=")
            if k in ("status", "leaf", "field"):
                kind, a = k, v
        out.extend(explain_value(a, kind))
    return out


def summary(items: list[Item]) -> dict[str, Any]:
    """Counts; `unknown` counts codes in no table (unknown log lines are shown but not counted)."""
    return {"items": len(items), "failures": sum(1 for i in items if i.kind == "seamcall_failure"),
            "unknown": sum(1 for i in items if not i.known and i.kind != "message")}
