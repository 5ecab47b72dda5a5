"""One small name -> builder registry, shared by layers, metric losses, backbones and datasets.

Modelled on timm's ``_registry.py`` / ``create_model``: a :class:`Registry` maps names to callables
(classes or builder functions), guards against silent overwrites, lists its names with ``fnmatch``
wildcards and builds an entry by name. Every registry of the library is one of these::

    from gca.nn import LAYERS               # propagation layer types
    from gca.losses import METRIC_LOSSES    # metric losses
    from gca.backbones import BACKBONES     # image backbones
    from gca.data import DATASETS           # datasets

    LAYERS.list("g*")                       # ['gatv2', 'gca', 'gen', 'gine']

    @METRIC_LOSSES.register("my_loss")
    def my_loss(num_classes, embedding_dim, margin=0.2):
        ...

An unknown name raises :class:`UnknownNameError` (both a ``KeyError`` and a ``ValueError``) whose message is
one line: ``unknown <kind> 'x' (did you mean 'y'?); available: a, b, c``.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, TypeVar, Union

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T", bound=Callable[..., Any])


class UnknownNameError(KeyError, ValueError):
    """A name that no registry entry answers to.

    Both a ``KeyError`` (a failed lookup) and a ``ValueError`` (bad input), so either ``except`` clause
    catches it. The message is printed as is (``KeyError`` alone would wrap it in quotes).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _describe(obj: Any) -> str:
    """``module.qualname`` of a registered object, for error messages."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{qualname}" if module else qualname


class Registry:
    """Names -> callables, with an overwrite guard, wildcard listing and build-by-name.

    Args:
        kind: what the entries are, in words (``"layer type"``, ``"metric loss"``, ``"backbone"``,
            ``"dataset"``); used in every error message.
        normalize: maps a name to its lookup key, e.g. case folding so that ``"CUB-200"`` finds
            ``"cub200"``. Default: names match exactly. Names that normalize to the same key clash.

    Example:
        >>> LOSSES = Registry("metric loss")
        >>> @LOSSES.register("npair")
        ... def npair(num_classes, embedding_dim, l2_reg=3e-3): ...
        >>> LOSSES.register("triplet", lambda num_classes, embedding_dim: ...)  # plain call
        >>> LOSSES.list("*pair")
        ['npair']
    """

    def __init__(self, kind: str, *, normalize: Optional[Callable[[str], str]] = None) -> None:
        self.kind = kind
        self._normalize = normalize or (lambda name: name)
        self._entries: Dict[str, Any] = {}  # canonical name -> entry
        self._index: Dict[str, str] = {}  # lookup key of a name or alias -> canonical name

    # ---------------------------------------------------------------------------------------- registering
    def register(
        self,
        name: Union[str, Callable[..., Any], None] = None,
        obj: Optional[Callable[..., Any]] = None,
        *,
        aliases: Iterable[str] = (),
        overwrite: bool = False,
    ) -> Any:
        """Register ``obj`` under ``name``; as a call or as a decorator.

        ``register("name", fn)`` registers and returns ``fn``; ``@register("name")``, ``@register()`` and
        a bare ``@register`` decorate (the last two use the function's ``__name__``).

        Args:
            name: the entry's name (default: ``obj.__name__``).
            obj: the callable to register; omitted when used as a decorator.
            aliases: further names that find the same entry (not listed by :meth:`list`).
            overwrite: replace an entry of the same name (or alias) instead of raising.

        Returns:
            ``obj`` when given, otherwise a decorator that registers and returns its argument.

        Raises:
            ValueError: the name or an alias is taken and ``overwrite`` is false, or a name is empty.
            TypeError: ``obj`` is not callable.
        """
        if callable(name) and not isinstance(name, str) and obj is None:  # bare @register
            return self._add(None, name, tuple(aliases), overwrite)
        if obj is not None:
            return self._add(name, obj, tuple(aliases), overwrite)

        def decorator(fn: T) -> T:
            return self._add(name, fn, tuple(aliases), overwrite)

        return decorator

    def _add(self, name: Optional[str], obj: Any, aliases: tuple, overwrite: bool) -> Any:
        if not callable(obj):
            raise TypeError(f"a {self.kind} entry must be callable, got {type(obj).__name__}")
        name = getattr(obj, "__name__", None) if name is None else name
        names = (name, *aliases)
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r} (aliases {aliases!r})")
        if not overwrite:
            for n in names:
                taken = self._index.get(self._normalize(n))
                if taken is not None:
                    how = "" if taken == n else (f" as {taken!r}" if self._normalize(taken) == self._normalize(n)
                                                 else f" as an alias of {taken!r}")
                    raise ValueError(f"{self.kind} {n!r} is already registered{how} "
                                     f"({_describe(self._entries[taken])}); pass overwrite=True to replace it")
        key = self._normalize(name)
        old = self._index.get(key)
        if old is not None and self._normalize(old) == key and old != name:  # same entry, new spelling
            del self._entries[old]
            self._index = {k: (name if v == old else v) for k, v in self._index.items()}
        self._entries[name] = obj
        self._index[key] = name
        for alias in aliases:
            self._index[self._normalize(alias)] = name
        return obj

    def unregister(self, name: str) -> Any:
        """Remove the entry ``name`` (or the entry an alias names) and its aliases; return it.

        Raises:
            UnknownNameError: ``name`` is not registered.
        """
        canonical = self.canonical(name)
        self._index = {k: v for k, v in self._index.items() if v != canonical}
        return self._entries.pop(canonical)

    # ---------------------------------------------------------------------------------------- looking up
    def canonical(self, name: str) -> str:
        """The registered name that ``name`` (a name, alias or other spelling) finds.

        Raises:
            UnknownNameError: nothing is registered under ``name``.
        """
        canonical = self._index.get(self._normalize(name)) if isinstance(name, str) else None
        if canonical is None:
            raise self._unknown(name)
        return canonical

    def get(self, name: str) -> Any:
        """The entry registered under ``name`` (or one of its aliases).

        Raises:
            UnknownNameError: nothing is registered under ``name``.
        """
        return self._entries[self.canonical(name)]

    __getitem__ = get

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the entry ``name``: ``get(name)(*args, **kwargs)``.

        Raises:
            UnknownNameError: nothing is registered under ``name``.
        """
        return self.get(name)(*args, **kwargs)

    def list(self, filter: Optional[str] = None) -> List[str]:  # noqa: A002 (timm's name for it)
        """Registered names (aliases excluded), sorted; ``filter`` keeps those matching a wildcard.

        Args:
            filter: an ``fnmatch`` pattern such as ``"res*"`` or ``"*_lite?"``, matched case-insensitively.
        """
        names = sorted(self._entries)
        if filter is None:
            return names
        return [n for n in names if fnmatch.fnmatchcase(n.lower(), str(filter).lower())]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.list())})"

    def _unknown(self, name: Any) -> UnknownNameError:
        suggestion = ""
        if isinstance(name, str):
            # difflib's default cutoff, as gca.train.config suggests config values: the same hint in both places
            close = difflib.get_close_matches(self._normalize(name), list(self._index), n=1)
            if close:
                suggestion = f" (did you mean {self._index[close[0]]!r}?)"
        available = ", ".join(self.list()) or "none registered"
        return UnknownNameError(f"unknown {self.kind} {name!r}{suggestion}; available: {available}")
