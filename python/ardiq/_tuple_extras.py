"""Attributes kept beside a named tuple: the public types ardiq 1.2 users unpack
(``TaskResult``, ``TaskContext``) hold its fields in the tuple and ArdiQ's additions in
the instance dict, where they take no part in unpacking, indexing, ``_asdict()`` or
equality. Pickling and copying carry the dict along."""

from __future__ import annotations

from typing import Any, ClassVar, Self


class TupleExtras:
    """Mixin, first among the bases of a named-tuple subclass whose ``__new__`` takes
    the names in ``_extras`` as keyword-only arguments."""

    __slots__ = ()
    _extras: ClassVar[tuple[str, ...]] = ()

    def _replace(self, /, **changes: Any) -> Self:
        extras = {name: changes.pop(name, getattr(self, name)) for name in self._extras}
        fields = super()._replace(**changes)  # type: ignore[misc]
        return type(self)(*fields, **extras)

    def __repr__(self) -> str:
        more = "".join(f", {name}={getattr(self, name)!r}" for name in self._extras)
        return f"{super().__repr__()[:-1]}{more})"
