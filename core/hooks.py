"""Start-up hooks: how a lower app triggers a higher one without importing it.

The lower app declares a ``Hook`` where the event happens (``surveys.hooks.response_completed``);
the higher app registers its receiver in its ``AppConfig.ready()``; the lower app calls
``hook.fire(...)`` with keyword arguments. Registration is explicit, once per process, and
checked: a receiver registered twice is refused, and the receivers of a hook are listed in
``docs/architecture.md``. Unlike Django signals, a hook has a fixed set of receivers known at
start-up and an exception in one propagates to the caller (a write that must happen is not
swallowed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Hook:
    def __init__(self, name: str, *, doc: str = "") -> None:
        self.name = name
        self.__doc__ = doc
        self._receivers: list[Callable[..., Any]] = []

    def __repr__(self) -> str:
        return f"<Hook {self.name}: {len(self._receivers)} receiver(s)>"

    def register(self, receiver: Callable[..., Any]) -> Callable[..., Any]:
        """Add ``receiver`` (usable as a decorator). Registering one twice raises ValueError."""
        if receiver in self._receivers:
            raise ValueError(f"{receiver!r} is already registered on hook {self.name}.")
        self._receivers.append(receiver)
        return receiver

    @property
    def receivers(self) -> tuple[Callable[..., Any], ...]:
        return tuple(self._receivers)

    def fire(self, **kwargs: Any) -> list[Any]:
        """Call every receiver in registration order; returns their results."""
        return [receiver(**kwargs) for receiver in self._receivers]
