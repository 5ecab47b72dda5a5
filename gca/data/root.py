"""Locating the data root directory.

All dataset loaders accept an explicit ``root``.  When it is omitted, the root
is resolved in this order:

1. the ``root`` argument, when given;
2. the environment variable ``GCA_DATA_ROOT``;
3. ``../shared/data`` relative to the current working directory;
4. ``../shared/data`` relative to the repository root (the parent of the
   ``gca`` package directory).

The first existing directory wins.  A root that was given explicitly (argument
or environment variable) but does not exist is an error; it is never silently
replaced by a fallback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["DATA_ROOT_ENV", "DEFAULT_RELATIVE_ROOT", "resolve_data_root", "repo_root"]

#: Environment variable that overrides the default data root.
DATA_ROOT_ENV = "GCA_DATA_ROOT"

#: Default location of the data, relative to the working directory or repo root.
DEFAULT_RELATIVE_ROOT = Path("..") / "shared" / "data"

_HOW_TO_SET = (
    f"Pass root=... (data.root=... on the gca command line), or set the environment "
    f"variable {DATA_ROOT_ENV}=/path/to/data, or place the data at "
    f"{DEFAULT_RELATIVE_ROOT.as_posix()} relative to the repository root."
)


def repo_root() -> Path:
    """Return the repository root: the parent directory of the ``gca`` package."""
    return Path(__file__).resolve().parents[2]


def _check_dir(path: Path, origin: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"Data root {str(path)!r} ({origin}) does not exist. {_HOW_TO_SET}"
        )
    if not path.is_dir():
        raise NotADirectoryError(
            f"Data root {str(path)!r} ({origin}) is not a directory. {_HOW_TO_SET}"
        )
    return path.resolve()


def resolve_data_root(root: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Return the directory that holds the data sets.

    Args:
        root: Explicit data root.  When ``None`` the environment variable ``GCA_DATA_ROOT`` is used, and when that
            is unset too, ``../shared/data`` is searched relative to the current working directory and relative to
            the repository root.

    Returns:
        pathlib.Path: The absolute, resolved data root.

    Raises:
        FileNotFoundError: If the explicit root or ``GCA_DATA_ROOT`` does not exist, or if no default location
            exists.  The message names the path(s) tried and how to set the root.
        NotADirectoryError: If the given root exists but is a file.
    """
    if root is not None:
        if isinstance(root, str) and not root.strip():
            raise ValueError(f"Data root must be a non-empty path, got {root!r}. {_HOW_TO_SET}")
        return _check_dir(Path(root).expanduser(), "given as argument")

    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return _check_dir(Path(env).expanduser(), f"from environment variable {DATA_ROOT_ENV}")

    candidates = [Path.cwd() / DEFAULT_RELATIVE_ROOT, repo_root() / DEFAULT_RELATIVE_ROOT]
    for cand in candidates:
        if cand.is_dir():
            return cand.resolve()
    tried = ", ".join(repr(str(c)) for c in dict.fromkeys(candidates))
    raise FileNotFoundError(f"No data root found (tried {tried}). {_HOW_TO_SET}")
