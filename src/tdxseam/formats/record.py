"""`record`: the subset of `dataclasses.dataclass` the operator tool's data classes use, quick to load.

`tdxseam plan` is a short-lived command, and at its start-up `dataclasses` cost more than the plan's
work: importing it loads `inspect` (with ast, dis, tokenize), and each class it decorates compiles
five or so methods one `exec` at a time (bench/bench_tool.py). `record` gives a class the same
methods (`__init__` with defaults, default factories and `__post_init__`, `__repr__`, `__eq__`,
`__hash__`, frozen `__setattr__`/`__delattr__`, `__match_args__`) as closures over its field
names, compiling nothing.

`replace` here is `dataclasses.replace` for records (without loading `dataclasses`);
`dataclasses.replace`, `fields`, `asdict` and `is_dataclass` work on a record too: its
`__dataclass_fields__` is built on first use, by letting `dataclasses` itself decorate a twin class
with the same fields, so the Field objects are the standard library's own.

Supported: `@record`, `@record(frozen=True)`, plain class bodies (no base records), and
`field(default=..., default_factory=..., repr=..., compare=..., hash=...)`. Anything else: use
`dataclasses`.
"""

from __future__ import annotations

__all__ = ["FrozenInstanceError", "field", "record", "replace"]

_MISSING = object()


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a frozen record (as `dataclasses.FrozenInstanceError`)."""


class _Field:
    __slots__ = ("default", "default_factory", "repr", "compare", "hash")

    def __init__(self, default=_MISSING, default_factory=_MISSING, repr=True, compare=True, hash=None):  # noqa: A002
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.default, self.default_factory = default, default_factory
        self.repr, self.compare, self.hash = repr, compare, hash

    def stdlib(self):
        import dataclasses

        kw = {"repr": self.repr, "compare": self.compare, "hash": self.hash}
        if self.default is not _MISSING:
            kw["default"] = self.default
        if self.default_factory is not _MISSING:
            kw["default_factory"] = self.default_factory
        return dataclasses.field(**kw)


def field(*, default=_MISSING, default_factory=_MISSING, repr=True, compare=True, hash=None):  # noqa: A002
    """As `dataclasses.field`, for the arguments listed."""
    return _Field(default, default_factory, repr, compare, hash)


class _StdlibFields:
    """`__dataclass_fields__` / `__dataclass_params__`, made by `dataclasses` on first use."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner):
        import dataclasses

        spec = owner.__record__
        ns = {"__annotations__": dict(spec["annotations"]), "__module__": owner.__module__,
              "__qualname__": owner.__qualname__}
        for name, f in spec["fields"].items():
            ns[name] = f.stdlib()
        twin = dataclasses.dataclass(frozen=spec["frozen"])(type(owner.__name__, (), ns))
        owner.__dataclass_fields__ = twin.__dataclass_fields__
        owner.__dataclass_params__ = twin.__dataclass_params__
        return getattr(owner, self.name)


def _is_classvar(annotation) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _process(cls, frozen: bool):
    if any("__record__" in vars(b) or "__dataclass_fields__" in vars(b) for b in cls.__mro__[1:]):
        raise TypeError(f"{cls.__qualname__}: record does not support base data classes; use dataclasses")
    body = cls.__dict__
    annotations = {n: a for n, a in body.get("__annotations__", {}).items() if not _is_classvar(a)}
    fields: dict[str, _Field] = {}
    for name in annotations:
        value = body.get(name, _MISSING)
        f = value if isinstance(value, _Field) else _Field(default=value)
        if f.default is not _MISSING and type(f.default).__hash__ is None:  # as dataclasses
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not allowed: "
                             "use default_factory")
        fields[name] = f
        if f.default is _MISSING:
            if name in body:
                delattr(cls, name)
        else:
            setattr(cls, name, f.default)

    names = tuple(fields)
    required = set()
    defaults, factories = {}, {}
    for name, f in fields.items():
        if f.default is not _MISSING:
            defaults[name] = f.default
        elif f.default_factory is not _MISSING:
            factories[name] = f.default_factory
        elif defaults or factories:
            raise TypeError(f"non-default argument {name!r} follows default argument")
        else:
            required.add(name)
    methods = {
        "__init__": _make_init(cls, names, required, defaults, factories, frozen, "__post_init__" in body),
        "__repr__": _make_repr(tuple(n for n, f in fields.items() if f.repr)),
        "__eq__": _make_eq(tuple(n for n, f in fields.items() if f.compare)),
    }
    if frozen:
        methods.update(_make_frozen(cls, frozenset(names)))
    for name, fn in methods.items():
        if name in body:  # the class's own method stays, as with dataclasses
            if name in ("__setattr__", "__delattr__"):
                raise TypeError(f"cannot overwrite attribute {name} in class {cls.__name__}")
            continue
        fn.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, fn)
    if "__hash__" not in body or body["__hash__"] is None:  # as dataclass: eq without frozen: unhashable
        hashed = tuple(n for n, f in fields.items() if (f.compare if f.hash is None else f.hash))
        cls.__hash__ = _make_hash(hashed, f"{cls.__qualname__}.__hash__") if frozen else None
    cls.__match_args__ = tuple(fields)
    cls.__record__ = {"annotations": annotations, "fields": fields, "frozen": frozen}
    cls.__dataclass_fields__ = _StdlibFields("__dataclass_fields__")
    cls.__dataclass_params__ = _StdlibFields("__dataclass_params__")
    return cls


# The methods are closures over the field names rather than generated source: compiling source per
# class is what makes `dataclasses` slow to load.

def _make_init(cls, names, required, defaults, factories, frozen, post_init):
    n = len(names)
    known = frozenset(names)
    qual = cls.__qualname__

    def __init__(self, *args, **kwargs):
        if len(args) > n:
            raise TypeError(f"{qual}.__init__() takes {n + 1} positional arguments but {len(args) + 1} were given")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in known:
                raise TypeError(f"{qual}.__init__() got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{qual}.__init__() got multiple values for argument {key!r}")
            values[key] = value
        if len(values) < n:
            missing = [k for k in names if k in required and k not in values]
            if missing:
                raise TypeError(f"{qual}.__init__() missing {len(missing)} required argument(s): "
                                + ", ".join(repr(k) for k in missing))
            for key in names:
                if key not in values:
                    values[key] = factories[key]() if key in factories else defaults[key]
        if frozen:
            self.__dict__.update(values)
        else:
            for key in names:
                setattr(self, key, values[key])
        if post_init:
            self.__post_init__()

    return __init__


def _make_repr(shown):
    def __repr__(self):
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in shown)
        return f"{type(self).__qualname__}({inner})"

    return __repr__


def _make_eq(compared):
    def __eq__(self, other):
        if other.__class__ is self.__class__:
            return tuple(getattr(self, k) for k in compared) == tuple(getattr(other, k) for k in compared)
        return NotImplemented

    return __eq__


def _make_hash(hashed, qualname):
    def __hash__(self):
        return hash(tuple(getattr(self, k) for k in hashed))

    __hash__.__qualname__ = qualname
    return __hash__


def _make_frozen(cls, names):
    def __setattr__(self, name, value):
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self, name):
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return {"__setattr__": __setattr__, "__delattr__": __delattr__}


def record(cls=None, /, *, frozen: bool = False):
    """`@record` or `@record(frozen=True)`: as `@dataclass` with the same arguments."""
    if cls is None:
        return lambda c: _process(c, frozen)
    return _process(cls, frozen)


def replace(obj, /, **changes):
    """As `dataclasses.replace`, for a record: a new one, with `changes` over `obj`'s fields."""
    spec = getattr(type(obj), "__record__", None)
    if spec is None:
        import dataclasses

        return dataclasses.replace(obj, **changes)
    for name in spec["fields"]:
        if name not in changes:
            changes[name] = getattr(obj, name)
    return obj.__class__(**changes)
