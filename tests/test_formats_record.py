"""`tdxseam.formats.record` behaves as `dataclasses.dataclass` for the subset it supports."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from tdxseam.formats.record import FrozenInstanceError, field, record


def _pair(frozen: bool):
    def body():
        class Point:
            x: int
            y: int = 2
            tags: list[str] = dataclasses.field(default_factory=list)
            note: str = dataclasses.field(default="n", compare=False, repr=False)

            def total(self) -> int:
                return self.x + self.y

        return Point

    ours = body()
    for name, f in list(vars(ours).items()):  # the same fields, spelled with record's field()
        if isinstance(f, dataclasses.Field):
            kw = {"repr": f.repr, "compare": f.compare, "hash": f.hash}
            if f.default is not dataclasses.MISSING:
                kw["default"] = f.default
            if f.default_factory is not dataclasses.MISSING:
                kw["default_factory"] = f.default_factory
            setattr(ours, name, field(**kw))
    return record(frozen=frozen)(ours), dataclasses.dataclass(frozen=frozen)(body())


@pytest.mark.parametrize("frozen", [False, True])
def test_same_behaviour_as_dataclass(frozen):
    R, D = _pair(frozen)
    r, d = R(1), D(1)
    assert repr(r) == repr(d).replace(D.__qualname__, R.__qualname__)
    assert (r.x, r.y, r.tags, r.note) == (d.x, d.y, d.tags, d.note) == (1, 2, [], "n")
    assert R(1, 3, ["a"], "m") == R(1, 3, ["a"], "z") != R(1, 4)  # note: compare=False
    assert R(1) != D(1) and R(1).__eq__(D(1)) is NotImplemented
    assert R(1).tags is not R(1).tags  # a new list each time
    assert R.__match_args__ == D.__match_args__
    assert r.total() == 3
    if frozen:
        assert hash(R(1, 3, ())) == hash(R(1, 3, (), "other")) == hash(D(1, 3, ()))  # note: not hashed
        with pytest.raises(FrozenInstanceError):
            r.x = 5
        with pytest.raises(AttributeError):
            del r.y
    else:
        assert R.__hash__ is None is D.__hash__
        r.x = 5
        assert r.x == 5
    with pytest.raises(TypeError):
        R()
    assert R(x=1, y=2) == R(1, 2)


@pytest.mark.parametrize("frozen", [False, True])
def test_dataclasses_functions_work_on_records(frozen):
    R, D = _pair(frozen)
    r = R(1, 3, ["a"])
    assert dataclasses.is_dataclass(r) and dataclasses.is_dataclass(R)
    assert [f.name for f in dataclasses.fields(r)] == [f.name for f in dataclasses.fields(D)]
    assert dataclasses.replace(r, y=7) == R(1, 7, ["a"])
    assert dataclasses.asdict(r) == {"x": 1, "y": 3, "tags": ["a"], "note": "n"}
    assert copy.deepcopy(r) == r and copy.copy(r) == r


def test_post_init_and_own_methods_kept():
    @record(frozen=True)
    class V:
        a: int

        def __post_init__(self):
            if self.a < 0:
                raise ValueError("negative")

        def __repr__(self):
            return "V!"

    assert repr(V(1)) == "V!"
    with pytest.raises(ValueError):
        V(-1)


def test_refuses_what_it_does_not_support():
    with pytest.raises(ValueError):
        @record
        class M:
            items: list = []  # noqa: RUF012

    with pytest.raises(TypeError):
        @record
        class Order:
            a: int = 1
            b: int

    @record
    class Base:
        a: int

    with pytest.raises(TypeError):
        @record
        class Child(Base):
            b: int
