"""A simulation scenario: everything one run does, generated from a seed, printable and shrinkable.

A `Scenario` is plain data. `generate(seed)` draws one from its own RNG (`random.Random` seeded with
a string, so the same seed gives the same scenario in every process and under any hash seed); the
same seed also seeds the emulated host, so it fixes the interleaving as well. The runner
(`tdxseam.sim.runner`) turns a scenario into tasks on the host's simulated CPUs:

- the host: its size, the module it boots, how many updates its P-SEAMLDR allows (SEAMDB capacity:
  1 leaves `num_remaining_updates` at zero after boot, 2 allows one update);
- TDs: some built before anything else runs, some built by a KVM task meanwhile, some started
  exactly when an upload begins (to race the update's TD-build guard); each then runs its vCPUs;
- sysfs readers of `seamldr_version`, `num_remaining_updates` and `version`;
- interrupts raised on CPUs, some whose handler asks the P-SEAMLDR for SEAMLDR.INFO;
- CPU hotplug events (a CPU taken offline and back), some started when an upload begins;
- one or more updates through the `tdx_module` fw_upload files, sometimes with a broken image or
  with the P-SEAMLDR's entropy failing, retried when the kernel answers device-busy;
- a fault plan: statuses (or VMfailInvalid/#GP/#UD) answered on chosen SEAMCALLs and CPUs.

Delays are in preemption points of the acting task: it sleeps while the others take about the
steps that many preemption points of its own would give them (`Cpu.delay`: the delay times the
tasks runnable when it begins, in one step). They shift actions against each other without naming
scheduler steps, so a scenario stays meaningful when shrinking changes the interleaving.
`simplifications()` yields smaller scenarios for the shrinker (`tdxseam.sim.replay.shrink`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace

from tdxseam.formats.version import ModuleVersion

READ_ATTRS = ("seamldr_version", "num_remaining_updates", "version")
IMAGE_KINDS = ("good", "bad-header", "bad-sig", "bad-hash")
IRQ_HANDLERS = ("nop", "seamldr_info", "nmi")  # nmi: an NMI (taken even with interrupts off)
HOST_SIZES = (2, 2, 3, 4, 4, 5, 6, 8)
MAX_DELAY = 60
REAL_DEFAULT = ("1.5.06", "1.5.13")  # real firmware: Intel's releases booted and updated to

# Fault rules the generator draws from: (leaf, CPU choice, statuses). "lead" = CPU 0 (the lockstep's
# lead), "any" = a random CPU or none, "none" = any CPU. Statuses use the fault-spec syntax of
# tdxseam.seam.faults (names, hex, vmfailinvalid/gp/ud).
_FAULT_MENU: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("TDH_SYS_SHUTDOWN", "none", ("0xc000010000000001", "TDX_SYS_BUSY", "vmfailinvalid", "gp")),
    ("P_SEAMLDR_INSTALL", "any", ("EBADPARAM", "EBADSIG", "ENOENTROPY", "EUNSPECERR", "vmfailinvalid")),
    ("TDH_SYS_INIT", "none", ("TDX_RND_NO_ENTROPY", "TDX_SYS_INCOMPATIBLE_SIGSTRUCT", "ud")),
    ("TDH_SYS_LP_INIT", "any", ("TDX_RND_NO_ENTROPY", "TDX_SYS_LP_INIT_DONE", "gp")),
    ("TDH_SYS_UPDATE", "none", ("TDX_SYS_INVALID_HANDOFF", "TDX_SYS_STATE_INCORRECT", "ud")),
    ("TDH_SYS_RD", "lead", ("TDX_METADATA_FIELD_ID_INCORRECT",)),
    ("P_SEAMLDR_INFO", "any", ("EBADPARAM", "vmfailinvalid")),
    # TD leaves: a KVM build fails before the TD exists, or a vCPU entry fails. (A build failing
    # half way would leave a TD mid-build for good: KVM-lite does not tear TDs down.)
    ("TDH_MNG_CREATE", "none", ("TDX_OPERAND_BUSY", "TDX_RND_NO_ENTROPY")),
    ("TDH_VP_ENTER", "none", ("TDX_OPERAND_BUSY",)),
)
# The menu's TD leaves: left out on real firmware, which runs no TDs yet.
TD_FAULT_LEAVES = frozenset({"TDH_MNG_CREATE", "TDH_VP_ENTER"})
# Features a seed may leave out altogether (swarm testing): each seed draws which it keeps, so
# some runs stress one mechanism without the noise of the others.
SWARM_FEATURES = ("tds", "readers", "irqs", "hotplug", "faults", "bad-images", "entropy", "sockets")


# A hand-written or shrunk scenario is a few KiB; this bounds what `sim run --scenario` reads.
SCENARIO_MAX_SIZE = 4 << 20


class ScenarioError(ValueError):
    """A scenario file that is not a scenario this host can run."""


def _typed(kind: type, item: dict, where: str):
    """A part from its JSON object, every field checked against the dataclass's type."""
    known = {f.name: f.type for f in fields(kind)}
    for k, v in item.items():
        if k not in known:
            raise ScenarioError(f"{where}: unknown key {k!r}")
        want = {"int": int, "bool": bool, "str": str}[known[k]]
        if type(v) is not want:
            raise ScenarioError(f"{where}.{k}: expected {want.__name__}")
        if want is int and not 0 <= v <= 1_000_000:
            raise ScenarioError(f"{where}.{k}: {v} out of range")
    return kind(**item)


@dataclass
class TdSpec:
    cpu: int  # the CPU whose KVM task builds and runs it
    vcpus: int = 1
    pages: int = 1
    prebuilt: bool = False  # built before the scenario's tasks start
    race: int = 0  # k > 0: start building when upload attempt k has begun
    delay: int = 0
    runs: int = 1  # vCPU entries after the build


@dataclass
class ReaderSpec:
    cpu: int
    attr: str  # one of READ_ATTRS
    reads: int = 1
    delay: int = 0
    gap: int = 0


@dataclass
class IrqSpec:
    cpu: int  # the CPU of the task that raises it
    target: int  # the CPU that takes it
    handler: str = "nop"  # one of IRQ_HANDLERS
    delay: int = 0


@dataclass
class HotplugSpec:
    cpu: int  # the CPU of the task that asks
    victim: int  # the CPU taken offline and back
    race: int = 0  # k > 0: start when upload attempt k has begun
    delay: int = 0
    gap: int = 0  # the delay between cpu_down and cpu_up
    victim2: int = 0  # k > 0: also take cpu k down (after `victim`), then bring both back


@dataclass
class UpdateSpec:
    to: str  # target module version
    image: str = "good"  # one of IMAGE_KINDS
    delay: int = 0
    aslr_entropy: bool = False  # the P-SEAMLDR's RDRAND for ASLR fails (recoverable ENOENTROPY)
    seamdb_entropy: bool = False  # every SEAMDB_INSERT try fails (unrecoverable ENOENTROPY)
    relocation: bool = False  # the P-SEAMLDR's ELF relocation of the new image fails
    alloc_fail: int = 0  # k > 0: the k-th page the kernel allocates for the upload fails (-ENOMEM)
    retries: int = 2  # further attempts after the kernel answers device-busy


@dataclass
class Scenario:
    seed: int
    cpus: int
    module: str = "1.5.06"  # the module the firmware loads at boot
    seamdb_capacity: int = 64  # SEAMDB entries: updates allowed = capacity - 1 after boot
    kernel: str = "merged"  # the kernel profile (kernel/profile.py)
    sockets: int = 1  # packages; CPUs are split evenly over them
    updater_cpu: int = 0
    tds: list[TdSpec] = field(default_factory=list)
    readers: list[ReaderSpec] = field(default_factory=list)
    irqs: list[IrqSpec] = field(default_factory=list)
    hotplug: list[HotplugSpec] = field(default_factory=list)
    updates: list[UpdateSpec] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)  # LEAF[@CPU][#N]=STATUS
    reboot: bool = False  # after the run: reboot the host and update it once more
    # "model": the Python TDX module (synthetic test-signed modules); "real": Intel's binaries
    # from the catalog on the emulated CPU (sim/real.py): no TDs, one package
    firmware: str = "model"

    # ---- printing and files ---------------------------------------------------------------------

    def to_json(self) -> dict:
        d = asdict(self)
        if self.firmware == "model":  # the model's scenarios print as they always have
            del d["firmware"]
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data: dict) -> Scenario:
        """A scenario from its JSON form; ScenarioError (a ValueError) for anything else."""
        kinds = {"tds": TdSpec, "readers": ReaderSpec, "irqs": IrqSpec, "hotplug": HotplugSpec,
                 "updates": UpdateSpec}
        types = {"seed": int, "cpus": int, "module": str, "seamdb_capacity": int, "updater_cpu": int,
                 "kernel": str, "sockets": int, "reboot": bool, "firmware": str}
        if not isinstance(data, dict):
            raise ScenarioError(f"a scenario is a JSON object, not {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ScenarioError(f"unknown scenario keys: {', '.join(sorted(map(str, unknown)))}")
        kw: dict = {}
        try:
            for k, v in data.items():
                if k in kinds:
                    if not isinstance(v, list) or not all(isinstance(i, dict) for i in v):
                        raise ScenarioError(f"{k}: expected a list of objects")
                    kw[k] = [_typed(kinds[k], item, k) for item in v]
                elif k == "faults":
                    if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
                        raise ScenarioError("faults: expected a list of strings")
                    kw[k] = list(v)
                else:
                    if type(v) is not types[k]:
                        raise ScenarioError(f"{k}: expected {types[k].__name__}")
                    kw[k] = v
            sc = cls(**kw)
        except TypeError as e:
            raise ScenarioError(str(e)) from None
        try:
            sc.validate()
        except ScenarioError:
            raise
        except ValueError as e:  # version and fault-spec errors are ValueErrors too
            raise ScenarioError(str(e)) from None
        return sc

    @classmethod
    def loads(cls, text: str | bytes) -> Scenario:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise ScenarioError(f"not JSON: {e}") from None
        return cls.from_json(data)

    def validate(self) -> None:
        """Reject a scenario that names CPUs or values the host cannot have (hand-written files)."""
        def cpu_ok(c: int, what: str) -> None:
            if not 0 <= c < self.cpus:
                raise ScenarioError(f"{what}: cpu{c} does not exist on a {self.cpus}-CPU host")

        if not 1 <= self.cpus <= 4096:
            raise ScenarioError(f"cpus must be 1..4096, not {self.cpus}")
        if not 1 <= self.seamdb_capacity <= 4096:
            raise ScenarioError(f"seamdb_capacity must be 1..4096, not {self.seamdb_capacity}")
        ModuleVersion.parse(self.module)
        from tdxseam.kernel.profile import PROFILE_NAMES

        if self.kernel not in PROFILE_NAMES:
            raise ScenarioError(f"kernel must be one of {', '.join(PROFILE_NAMES)}, not {self.kernel!r}")
        if not 1 <= self.sockets <= self.cpus:
            raise ScenarioError(f"sockets must be 1..{self.cpus}, not {self.sockets}")
        cpu_ok(self.updater_cpu, "updater")
        if self.firmware not in ("model", "real"):
            raise ScenarioError(f"firmware must be model or real, not {self.firmware!r}")
        if self.firmware == "real":
            if self.tds:
                raise ScenarioError("tds: real firmware runs no TDs yet (the TD leaves on Intel's binary "
                                    "are not driven by the emulated host)")
            if self.sockets != 1:
                raise ScenarioError("sockets: the real-firmware platform model describes one package")
            td_faults = [f for f in self.faults if _leaf_of(f) in TD_FAULT_LEAVES]
            if td_faults:
                raise ScenarioError(f"faults: {td_faults[0]} hits a TD leaf; real firmware runs no TDs")
        for t in self.tds:
            cpu_ok(t.cpu, "td")
            if not (1 <= t.vcpus <= 8 and 1 <= t.pages <= 8):
                raise ScenarioError("td: 1..8 vCPUs and 1..8 pages")
        for r in self.readers:
            cpu_ok(r.cpu, "reader")
            if r.attr not in READ_ATTRS:
                raise ScenarioError(f"reader: unknown attribute {r.attr!r}")
        for i in self.irqs:
            cpu_ok(i.cpu, "irq")
            cpu_ok(i.target, "irq target")
            if i.handler not in IRQ_HANDLERS:
                raise ScenarioError(f"irq: unknown handler {i.handler!r}")
            if i.handler == "seamldr_info" and self.kernel != "v4":
                raise ScenarioError(f"irq: handler {i.handler!r} calls the P-SEAMLDR from interrupt "
                                    f"context, which only the v4 kernel (irqsave lock) allows")
        for h in self.hotplug:
            cpu_ok(h.cpu, "hotplug")
            cpu_ok(h.victim, "hotplug victim")
            if h.victim == 0:
                raise ScenarioError("hotplug: cpu0 cannot go offline")
            if h.victim2:
                cpu_ok(h.victim2, "hotplug victim2")
                if h.victim2 == h.victim:
                    raise ScenarioError("hotplug: victim2 must differ from victim")
        for u in self.updates:
            ModuleVersion.parse(u.to)
            if u.image not in IMAGE_KINDS:
                raise ScenarioError(f"update: unknown image kind {u.image!r}")
        from tdxseam.seam.faults import parse_fault_spec

        for f in self.faults:
            parse_fault_spec(f)

    def describe(self) -> list[str]:
        """One line per part, for `sim run` and shrink reports."""
        pk = f" in {self.sockets} packages" if self.sockets > 1 else ""
        fw = ", Intel's binaries (real firmware), no TDs" if self.firmware == "real" else ""
        out = [f"host: {self.cpus} CPUs{pk}{fw}, kernel {self.kernel}, module {self.module}, SEAMDB capacity "
               f"{self.seamdb_capacity} (updates left after boot: {self.seamdb_capacity - 1})"]
        for i, t in enumerate(self.tds):
            when = "before start" if t.prebuilt else (f"when upload {t.race} begins" if t.race else "meanwhile")
            out.append(f"td{i}: cpu{t.cpu}, {t.vcpus} vCPU(s), {t.pages} page(s), built {when}"
                       f" (+{t.delay}), {t.runs} run(s)")
        for i, r in enumerate(self.readers):
            out.append(f"reader{i}: cpu{r.cpu} reads {r.attr} x{r.reads} (+{r.delay}, gap {r.gap})")
        for i, q in enumerate(self.irqs):
            out.append(f"irq{i}: cpu{q.cpu} raises on cpu{q.target}, handler {q.handler} (+{q.delay})")
        for i, h in enumerate(self.hotplug):
            when = f"when upload {h.race} begins" if h.race else "meanwhile"
            also = f" (then cpu{h.victim2})" if h.victim2 else ""
            out.append(f"hotplug{i}: cpu{h.cpu} takes cpu{h.victim}{also} down and up {when} (+{h.delay}, gap {h.gap})")
        for i, u in enumerate(self.updates):
            extra = [k for k, on in (("aslr-entropy", u.aslr_entropy), ("seamdb-entropy", u.seamdb_entropy),
                                     ("relocation", u.relocation)) if on]
            if u.alloc_fail:
                extra.append(f"allocation {u.alloc_fail} fails")
            out.append(f"update{i}: from cpu{self.updater_cpu} to {u.to}, image {u.image}"
                       f"{', ' + ', '.join(extra) if extra else ''} (+{u.delay}, {u.retries} retries)")
        for f in self.faults:
            out.append(f"fault: {f}")
        if self.reboot:
            out.append("then: reboot, and one more update")
        return out

    # ---- shrinking ------------------------------------------------------------------------------

    def size(self) -> int:
        """How big the scenario is, for the shrinker: parts, CPUs, and the work each part does."""
        n = self.cpus + len(self.faults) * 2
        n += sum(2 + t.vcpus + t.pages + t.runs + (t.delay > 0) for t in self.tds)
        n += sum(1 + r.reads + (r.delay > 0) + (r.gap > 0) for r in self.readers)
        n += sum(1 + (q.handler != "nop") + (q.delay > 0) for q in self.irqs)
        n += sum(2 + (h.delay > 0) + (h.gap > 0) for h in self.hotplug)
        n += sum(3 + (u.image != "good") + u.aslr_entropy + u.seamdb_entropy + u.relocation
                 + (u.alloc_fail > 0) + (u.delay > 0) + u.retries for u in self.updates)
        n += (self.sockets > 1) + sum(h.victim2 > 0 for h in self.hotplug) + 2 * self.reboot
        return n

    def simplifications(self) -> Iterator[Scenario]:
        """Smaller variants, biggest cuts first. Each is a valid scenario with the same seed."""
        lists = ("faults", "hotplug", "irqs", "readers", "tds", "updates")
        for name in lists:  # drop a whole kind of part
            if getattr(self, name) and not (name == "updates" and len(self.updates) == 1):
                yield replace(self, **({name: []} if name != "updates" else {name: self.updates[:1]}))
        for name in lists:  # drop one part
            items = getattr(self, name)
            for i in range(len(items)):
                if name == "updates" and len(items) == 1:
                    break
                yield replace(self, **{name: items[:i] + items[i + 1:]})
        if self.reboot:
            yield replace(self, reboot=False)
        if self.sockets > 1:
            yield replace(self, sockets=1)
        if self.cpus > 2:  # a smaller host
            for n in sorted({2, self.cpus - 1}):
                if n < self.cpus:
                    sc = self.with_cpus(n)
                    if sc is not None:
                        yield sc
        # lighter parts
        for i, t in enumerate(self.tds):
            for change in ({"delay": 0}, {"runs": 0}, {"vcpus": 1}, {"pages": 1}, {"prebuilt": True, "race": 0}):
                nt = replace(t, **change)
                if nt != t:
                    yield replace(self, tds=self.tds[:i] + [nt] + self.tds[i + 1:])
        for i, r in enumerate(self.readers):
            for change in ({"reads": 1}, {"delay": 0}, {"gap": 0}):
                nr = replace(r, **change)
                if nr != r:
                    yield replace(self, readers=self.readers[:i] + [nr] + self.readers[i + 1:])
        for i, q in enumerate(self.irqs):
            for change in ({"handler": "nop"}, {"delay": 0}):
                nq = replace(q, **change)
                if nq != q:
                    yield replace(self, irqs=self.irqs[:i] + [nq] + self.irqs[i + 1:])
        for i, h in enumerate(self.hotplug):
            for change in ({"victim2": 0}, {"delay": 0}, {"gap": 0}):
                nh = replace(h, **change)
                if nh != h:
                    yield replace(self, hotplug=self.hotplug[:i] + [nh] + self.hotplug[i + 1:])
        for i, u in enumerate(self.updates):
            for change in ({"image": "good"}, {"aslr_entropy": False}, {"seamdb_entropy": False},
                           {"relocation": False}, {"alloc_fail": 0}, {"delay": 0}, {"retries": 0}):
                nu = replace(u, **change)
                if nu != u:
                    yield replace(self, updates=self.updates[:i] + [nu] + self.updates[i + 1:])

    def with_cpus(self, n: int) -> Scenario | None:
        """The scenario on an n-CPU host, parts on missing CPUs moved to cpu % n (None if impossible)."""
        def c(x: int) -> int:
            return x % n

        hot = []
        for h in self.hotplug:
            victim = h.victim if h.victim < n else n - 1
            if victim == 0:
                continue
            v2 = h.victim2 if h.victim2 < n and h.victim2 != victim else 0
            hot.append(replace(h, cpu=c(h.cpu), victim=victim, victim2=v2))
        faults = []
        from tdxseam.seam.faults import parse_fault_spec

        for f in self.faults:
            r = parse_fault_spec(f)
            if r.cpu is not None and r.cpu >= n:
                f = f.replace(f"@{r.cpu}", f"@{c(r.cpu)}", 1)
            faults.append(f)
        sc = replace(
            self, cpus=n, sockets=min(self.sockets, n), updater_cpu=c(self.updater_cpu),
            tds=[replace(t, cpu=c(t.cpu)) for t in self.tds],
            readers=[replace(r, cpu=c(r.cpu)) for r in self.readers],
            irqs=[replace(q, cpu=c(q.cpu), target=c(q.target)) for q in self.irqs],
            hotplug=hot, faults=faults,
        )
        try:
            sc.validate()
        except ValueError:
            return None
        return sc


# ---- generation ---------------------------------------------------------------------------------


def _fault(rng: random.Random, cpus: int, n_updates: int) -> str:
    leaf, where, statuses = rng.choice(_FAULT_MENU)
    status = rng.choice(statuses)
    cpu = ""
    if where == "lead":
        cpu = "@0"
    elif where == "any" and rng.random() < 0.8:
        cpu = f"@{rng.randrange(cpus)}"
    if status == "TDX_RND_NO_ENTROPY" and rng.random() < 0.5:
        nth = "#*"  # every call: the kernel's 10 retries run out
    elif leaf == "TDH_SYS_RD":
        nth = f"#{rng.randint(1, 4 * n_updates)}"  # the handoff-version read or a version re-read
    elif leaf == "P_SEAMLDR_INFO":
        nth = f"#{rng.randint(1, 3)}"
    else:
        nth = "" if rng.random() < 0.75 else f"#{rng.randint(2, 3)}"
    return f"{leaf}{cpu}{nth}={status}"


def _leaf_of(spec: str) -> str:
    return spec.split("=", 1)[0].split("@", 1)[0].split("#", 1)[0]


def generate(seed: int, *, cpus: int | None = None, kernel: str = "merged", firmware: str = "model",
             module: str | None = None, to: str | None = None) -> Scenario:
    """The scenario of `seed` (on a `cpus`-CPU host if given, else a size drawn from the seed)
    for the kernel profile `kernel`.

    `firmware="real"`: the model's scenario of the seed with what Intel's binary cannot do yet
    left out (TDs, faults on TD leaves, a second package), booting Intel's `module` and updating
    every time to `to` (default 1.5.06 and 1.5.13)."""
    real = firmware == "real"
    if firmware not in ("model", "real"):
        raise ValueError(f"firmware must be model or real, not {firmware!r}")
    if not real and (module is not None or to is not None):
        raise ValueError("module and to choose Intel releases: they go with firmware real")
    rng = random.Random(f"tdxseam sim scenario {seed}")
    n = cpus if cpus is not None else rng.choice(HOST_SIZES)
    if not 1 <= n <= 4096:
        raise ValueError(f"cpus must be 1..4096, not {n}")
    # swarm: this seed's feature set (each kept with probability 3/4)
    on = {f: rng.random() < 0.75 for f in SWARM_FEATURES}
    start = rng.choice((3, 4, 5, 6))
    cap = rng.choices((64, 1, 2), weights=(80, 10, 10))[0]
    nup = rng.choices((1, 2, 3), weights=(65, 28, 7))[0]
    sockets = rng.choice((1, 2)) if on["sockets"] and n >= 4 else 1

    def delay(hi: int = MAX_DELAY) -> int:
        return rng.randint(0, hi) if rng.random() < 0.7 else 0

    # CPUs that may go offline: never cpu0, and nothing else is placed on them
    victim = n - 1 if n >= 3 and on["hotplug"] and rng.random() < 0.4 else None
    victim2 = n - 2 if victim is not None and n >= 4 and rng.random() < 0.5 else 0
    usable = [c for c in range(n) if c not in (victim, victim2 or None)]
    # a busy victim: readers and KVM tasks may start there and migrate when it goes offline
    busy = usable + [c for c in (victim, victim2) if c] if victim is not None and rng.random() < 0.5 else usable

    target = start
    updates = []
    for _ in range(nup):
        target += rng.choice((1, 1, 2, 3))
        image = rng.choices(IMAGE_KINDS, weights=(85, 5, 5, 5))[0] if on["bad-images"] else "good"
        ent = on["entropy"]
        updates.append(UpdateSpec(
            to=str(ModuleVersion(1, 5, target)), image=image, delay=delay(),
            aslr_entropy=ent and rng.random() < 0.05, seamdb_entropy=ent and rng.random() < 0.05,
            relocation=ent and rng.random() < 0.03,
            alloc_fail=rng.randint(1, 3) if ent and rng.random() < 0.03 else 0,
            retries=rng.choice((1, 2, 3)),
        ))
    tds = []
    for _ in range(rng.choice((0, 1, 1, 2, 2, 3)) if on["tds"] else 0):
        kind = rng.choices(("prebuilt", "meanwhile", "race"), weights=(40, 30, 30))[0]
        tds.append(TdSpec(
            cpu=rng.choice(busy), vcpus=rng.choice((1, 1, 2)), pages=rng.choice((1, 1, 2)),
            prebuilt=kind == "prebuilt", race=rng.randint(1, nup) if kind == "race" else 0,
            delay=delay(20 if kind == "race" else MAX_DELAY), runs=rng.choice((0, 1, 2, 3)),
        ))
    readers = [ReaderSpec(cpu=rng.choice(busy), attr=rng.choice(READ_ATTRS), reads=rng.randint(1, 4),
                          delay=delay(), gap=delay(20))
               for _ in range(rng.choice((0, 1, 1, 2, 3)) if on["readers"] else 0)]
    # interrupt handlers that call the P-SEAMLDR exist only with v4's irqsave lock
    irqs = [IrqSpec(cpu=rng.choice(usable), target=rng.choice(usable),
                    handler=rng.choice(IRQ_HANDLERS if kernel == "v4" else ("nop", "nmi")), delay=delay())
            for _ in range(rng.choice((0, 0, 1, 2, 3, 4)) if on["irqs"] else 0)]
    hotplug = []
    if victim is not None:
        race = rng.randint(1, nup) if rng.random() < 0.7 else 0
        hotplug.append(HotplugSpec(cpu=rng.choice(usable), victim=victim, race=race,
                                   delay=delay(15 if race else MAX_DELAY), gap=delay(30), victim2=victim2))
    faults: list[str] = []
    roll = rng.random() if on["faults"] else 1.0
    for _ in range(2 if roll < 0.12 else 1 if roll < 0.45 else 0):
        f = _fault(rng, n, nup)
        if _leaf_of(f) not in {_leaf_of(x) for x in faults}:  # one rule per leaf
            faults.append(f)
    updater = rng.choice(usable)
    reboot = rng.random() < 0.25
    boot = str(ModuleVersion(1, 5, start))
    if real:
        # the model's scenario of the seed minus what Intel's binary cannot do yet (TDs, faults on
        # TD leaves, a second package), on Intel's releases: the boot module, every update to `to`
        boot = str(ModuleVersion.parse(module or REAL_DEFAULT[0]))
        target_v = str(ModuleVersion.parse(to or REAL_DEFAULT[1]))
        updates = [replace(u, to=target_v) for u in updates]
        tds, sockets = [], 1
        faults = [f for f in faults if _leaf_of(f) not in TD_FAULT_LEAVES]
    sc = Scenario(seed=seed, cpus=n, module=boot, seamdb_capacity=cap,
                  kernel=kernel, sockets=sockets, updater_cpu=updater, tds=tds, readers=readers,
                  irqs=irqs, hotplug=hotplug, updates=updates, faults=faults, reboot=reboot,
                  firmware=firmware)
    sc.validate()
    return sc


def tiny(seed: int = 0, *, cpus: int = 2, reader: bool = True, fault: str | None = None,
         kernel: str = "merged") -> Scenario:
    """A minimal scenario for exhaustive schedule exploration: one update, one prebuilt TD,
    optionally one reader of seamldr_version racing it."""
    readers = [ReaderSpec(cpu=cpus - 1, attr="seamldr_version")] if reader else []
    return Scenario(seed=seed, cpus=cpus, module="1.5.06", kernel=kernel,
                    tds=[TdSpec(cpu=0, prebuilt=True, runs=0)], readers=readers,
                    updates=[UpdateSpec(to="1.5.08", retries=0)], faults=[fault] if fault else [])
