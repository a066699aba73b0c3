"""``Registry[T]``: the generic name -> object table behind every Python *kind* (a leaf module).

Attack kinds (``attacks.base.ATTACKS``), defense kinds (``defenses.base.DEFENSES``), architectures
(``bench.snn.models.ARCHITECTURES``) and input encoders (``bench.snn.encoders.ENCODERS``) are instances.
Implementations import this module and register themselves with a decorator; this module imports no
implementation (the lm-evaluation-harness layout, ``lm_eval/api/registry.py``), so the registry and the
code it lists cannot form an import cycle. The YAML loader (:mod:`snnbench.registry`) receives the tables
it validates against as an argument (:class:`snnbench.registry.Kinds`).

Example::

    ATTACKS: Registry[type[Attack]] = Registry("attack")

    @ATTACKS.register("pgd")
    class PGD(Attack): ...

    ATTACKS.get("pgf")  # BenchError: unknown attack 'pgf'; did you mean 'pgd'? valid: ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from snnbench.errors import unknown

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object map; registering a name twice raises, an unknown name says "did you mean"."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (a collision raises ``ValueError``: a bug, not input)."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, where: str = "") -> T:
        """The object registered as ``name``; ``where`` (a YAML path or flag) prefixes the error."""
        if name not in self._items:
            raise unknown(self.kind, name, self._items, where)
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in sorted(self._items)]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
