"""Turn downloaded dataset archives into the folder layout the loaders read.

Python API::

    from gca.data.prepare import prepare, check
    prepare("cars196", ["~/Downloads/car_ims.tgz", "~/Downloads/cars_annos.mat"], "../shared/data")
    check("cars196", "../shared/data")       # validate an existing layout

Command line (``main(argv)``; also ``python datasets/prepare.py ...``)::

    python -m gca.data.prepare NAME SOURCE [SOURCE ...] DEST [--mode copy|move|symlink] [--overwrite]
    python -m gca.data.prepare --check NAME [ROOT]
    python -m gca.data.prepare --list

``SOURCE`` may be an archive (``.zip``, ``.tar``, ``.tgz``/``.tar.gz``,
``.tar.bz2``, ``.tar.xz``), a loose file (``cars_annos.mat``,
``list_eval_partition.txt``, an Omniglot ``.npz``), an already extracted
folder, or a folder holding any of these (archives inside it, also nested
ones such as ``caltech-101.zip`` -> ``101_ObjectCategories.tar.gz``, are
extracted when a required item is not found otherwise).  ``DEST`` is the data
root; the dataset ends up in ``DEST/<folder>`` (``CUB_200_2011``, ``cars196``,
``Stanford_Online_Products``, ``inshop``, ``omniglot``, ``caltech101``), then
every split is loaded and every referenced image checked.  Missing pieces
raise :class:`PrepareError` listing them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

__all__ = [
    "PrepareError",
    "PREPARE_SPECS",
    "prepare",
    "check",
    "extract_archive",
    "add_arguments",
    "run",
    "main",
]

ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip")
_SEARCH_DEPTH = 6


class PrepareError(RuntimeError):
    """Preparing or validating a dataset failed; ``problems`` lists every issue found."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


@dataclass(frozen=True)
class Item:
    """One file or folder a dataset needs.

    ``target`` is relative to the dataset folder (``""`` = the folder itself).
    A folder matches when its name is ``name`` (any name if ``None``) and it
    holds every entry of ``contains``.  ``hints`` are archive stems that may
    hold the item (for nested archives).
    """

    target: str
    kind: str  # "file" | "dir"
    name: Optional[str]
    label: str
    contains: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrepareSpec:
    """What a dataset needs: ``components``, each satisfied by one of its alternative items."""

    name: str
    folder: str
    components: tuple[tuple[Item, ...], ...]
    downloads: str
    extra: tuple[str, ...] = field(default=())


PREPARE_SPECS: dict[str, PrepareSpec] = {
    "cub200": PrepareSpec(
        "cub200",
        "CUB_200_2011",
        (
            (
                Item("", "dir", None,
                     "CUB_200_2011/ folder with images.txt, image_class_labels.txt, classes.txt and images/",
                     contains=("images.txt", "image_class_labels.txt", "classes.txt", "images"),
                     hints=("CUB_200_2011",)),
            ),
        ),
        "CUB_200_2011.tgz (https://www.vision.caltech.edu/datasets/cub_200_2011/)",
    ),
    "cars196": PrepareSpec(
        "cars196",
        "cars196",
        (
            (Item("cars_annos.mat", "file", "cars_annos.mat", "cars_annos.mat (annotation file)",
                  hints=("car_devkit", "cars_annos")),),
            (Item("car_ims", "dir", "car_ims", "car_ims/ (folder of the 16,185 images, from car_ims.tgz)",
                  hints=("car_ims",)),),
        ),
        "car_ims.tgz and cars_annos.mat (original Stanford Cars release)",
    ),
    "sop": PrepareSpec(
        "sop",
        "Stanford_Online_Products",
        (
            (
                Item("", "dir", None, "Stanford_Online_Products/ folder with Ebay_train.txt and Ebay_test.txt",
                     contains=("Ebay_train.txt", "Ebay_test.txt"), hints=("Stanford_Online_Products",)),
            ),
        ),
        "Stanford_Online_Products.zip (https://cvgl.stanford.edu/projects/lifted_struct/)",
    ),
    "inshop": PrepareSpec(
        "inshop",
        "inshop",
        (
            (Item("Eval/list_eval_partition.txt", "file", "list_eval_partition.txt",
                  "Eval/list_eval_partition.txt (evaluation partition)", hints=("Eval",)),),
            (Item("img", "dir", "img", "img/ (image folder, from Img/img.zip)", hints=("img", "Img")),),
        ),
        "Img/img.zip and Eval/list_eval_partition.txt (DeepFashion In-shop Clothes Retrieval Benchmark)",
    ),
    "omniglot": PrepareSpec(
        "omniglot",
        "omniglot",
        (
            (
                Item("images_background.npz", "file", "images_background.npz", "images_background.npz"),
                Item("images_background", "dir", "images_background", "images_background/ (from images_background.zip)",
                     hints=("images_background", "omniglot", "omniglot-master", "python")),
            ),
            (
                Item("images_evaluation.npz", "file", "images_evaluation.npz", "images_evaluation.npz"),
                Item("images_evaluation", "dir", "images_evaluation", "images_evaluation/ (from images_evaluation.zip)",
                     hints=("images_evaluation", "omniglot", "omniglot-master", "python")),
            ),
        ),
        "images_background.zip and images_evaluation.zip (github.com/brendenlake/omniglot, python/), "
        "or images_background.npz and images_evaluation.npz",
    ),
    "caltech101": PrepareSpec(
        "caltech101",
        "caltech101",
        (
            (Item("101_ObjectCategories", "dir", "101_ObjectCategories",
                  "101_ObjectCategories/ (from 101_ObjectCategories.tar.gz)",
                  hints=("101_ObjectCategories", "caltech-101", "caltech101")),),
        ),
        "caltech-101.zip or 101_ObjectCategories.tar.gz (https://data.caltech.edu/records/mzrjq-6wc02)",
    ),
}


# ------------------------------------------------------------------------ archives


def archive_stem(path: Union[str, os.PathLike]) -> Optional[str]:
    """Name without the archive suffix, or ``None`` if ``path`` is not an archive by name."""
    name = Path(path).name
    low = name.lower()
    for suf in ARCHIVE_SUFFIXES:
        if low.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return None


def extract_archive(archive: Union[str, os.PathLike], out_dir: Union[str, os.PathLike]) -> Path:
    """Extract a zip or tar archive into ``out_dir`` (created); returns ``out_dir``.

    Members that would land outside ``out_dir`` (absolute paths, ``..``, links
    pointing out) are rejected.

    Raises:
        PrepareError: If the file is not a readable zip/tar archive.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    dest = (root / member.filename).resolve()
                    if dest != root and root not in dest.parents:
                        raise PrepareError(f"archive {str(archive)!r} holds an unsafe path {member.filename!r}")
                zf.extractall(root)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(root, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    for member in tf.getmembers():
                        dest = (root / member.name).resolve()
                        if dest != root and root not in dest.parents or member.issym() or member.islnk():
                            raise PrepareError(f"archive {str(archive)!r} holds an unsafe member {member.name!r}")
                    tf.extractall(root)
        else:
            raise PrepareError(f"{str(archive)!r} is not a zip or tar archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise PrepareError(f"cannot extract archive {str(archive)!r} (truncated or corrupt?): {exc}") from exc
    return out_dir


# ------------------------------------------------------------------------- search


def _matches(item: Item, path: Path, is_dir: bool) -> bool:
    if item.kind == "file":
        return not is_dir and path.name == item.name
    if not is_dir:
        return False
    if item.name is not None and path.name != item.name:
        return False
    if item.contains:
        return all((path / c).exists() for c in item.contains)
    try:
        return any(True for _ in os.scandir(path))
    except OSError:
        return False


def _find(item: Item, roots: Sequence[Path]) -> Optional[Path]:
    """Breadth-first search for ``item`` below ``roots`` (roots themselves included).

    Temporary ``.gca_prepare_*`` folders are only searched when given as a root.
    """
    queue: deque[tuple[Path, int]] = deque()
    for r in roots:
        if r.is_file():
            if _matches(item, r, False):
                return r
        elif r.is_dir():
            queue.append((r, 0))
    seen: set[Path] = set()
    while queue:
        d, depth = queue.popleft()
        rd = d.resolve()
        if rd in seen:
            continue
        seen.add(rd)
        if _matches(item, d, True):
            return d
        if depth >= _SEARCH_DEPTH:
            continue
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            p = Path(e.path)
            if e.is_dir():
                if not e.name.startswith(".gca_prepare_"):
                    queue.append((p, depth + 1))
            elif item.kind == "file" and _matches(item, p, False):
                return p
    return None


def _find_archives(roots: Sequence[Path], max_depth: int = 3) -> list[Path]:
    """Archives (by name) at or below ``roots``, shallowest first."""
    found, queue = [], deque((r, 0) for r in roots)
    seen: set[Path] = set()
    while queue:
        p, depth = queue.popleft()
        if p.is_file():
            if archive_stem(p) is not None:
                found.append(p)
            continue
        rp = p.resolve()
        if rp in seen or not p.is_dir() or depth > max_depth:
            continue
        seen.add(rp)
        try:
            for e in sorted(os.scandir(p), key=lambda e: e.name):
                queue.append((Path(e.path), depth + 1))
        except OSError:
            continue
    return found


# ------------------------------------------------------------------------ placing


def _place(found: Path, target: Path, mode: str, owned: bool, overwrite: bool, log: Callable[[str], None]) -> None:
    """Put ``found`` at ``target`` by moving (extracted data), copying or symlinking."""
    if target.exists() or target.is_symlink():
        if target.resolve() == found.resolve():
            log(f"  {target} already in place")
            return
        if not overwrite:
            raise PrepareError(f"{str(target)!r} already exists; pass overwrite=True (--overwrite) to replace it")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if owned or mode == "move":
        log(f"  move {found} -> {target}")
        shutil.move(str(found), str(target))
    elif mode == "symlink":
        log(f"  link {target} -> {found.resolve()}")
        target.symlink_to(found.resolve(), target_is_directory=found.is_dir())
    else:
        log(f"  copy {found} -> {target}")
        if found.is_dir():
            shutil.copytree(found, target, symlinks=False)
        else:
            shutil.copy2(found, target)


def _spec(name: str) -> PrepareSpec:
    from gca.data.registry import canonical_name

    try:
        canon = canonical_name(name)
    except KeyError:
        canon = None
    if canon not in PREPARE_SPECS:
        raise PrepareError(f"cannot prepare dataset {name!r}; supported: {', '.join(sorted(PREPARE_SPECS))}")
    return PREPARE_SPECS[canon]


def prepare(
    name: str,
    source: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
    dest: Union[str, os.PathLike],
    *,
    mode: str = "copy",
    overwrite: bool = False,
    check_images: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> Path:
    """Build the loader's layout for dataset ``name`` under the data root ``dest``.

    Args:
        name: ``"cub200"``, ``"cars196"``, ``"sop"``, ``"inshop"``, ``"omniglot"`` or ``"caltech101"`` (aliases
            accepted).
        source: One path or a list of paths: archives, loose files or folders (see the module docstring).
        dest: Data root; created if needed.  The dataset goes to ``dest/<folder>``.
        mode: How items found in an extracted *folder* given as source are placed: ``"copy"`` (default), ``"move"``
            or ``"symlink"``.  Items extracted from archives are always moved out of the temporary folder.
        overwrite: Replace existing items at the destination.
        check_images: After placing, verify that every image referenced by the annotations exists (loads every
            split).
        log: Progress callback (e.g. ``print``); silent by default.

    Returns:
        pathlib.Path: The dataset folder ``dest/<folder>``.

    Raises:
        PrepareError: If a source is missing or not extractable, required items are not found (the message lists
            them and what to download), a destination exists without ``overwrite``, or validation fails.
    """
    log = log or (lambda msg: None)
    if mode not in ("copy", "move", "symlink"):
        raise ValueError(f"mode must be 'copy', 'move' or 'symlink', got {mode!r}")
    spec = _spec(name)
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise PrepareError(f"{spec.name}: no source given; expected {spec.downloads}")
    sources = [Path(s).expanduser() for s in sources]
    absent = [str(s) for s in sources if not s.exists()]
    if absent:
        raise PrepareError(f"{spec.name}: source path(s) not found", absent)
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    target_dir = dest / spec.folder
    staging = Path(tempfile.mkdtemp(prefix=".gca_prepare_", dir=dest))
    try:
        roots: list[Path] = []
        extracted: set[Path] = set()
        for s in sources:
            if s.is_file() and archive_stem(s) is not None:
                out = staging / f"{len(extracted):02d}_{archive_stem(s)}"
                log(f"extract {s}")
                extract_archive(s, out)
                extracted.add(s.resolve())
            else:
                roots.append(s)
        roots.insert(0, staging)

        found: dict[int, tuple[Item, Path]] = {}
        for _round in range(4):
            missing = []
            for ci, alternatives in enumerate(spec.components):
                if ci in found:
                    continue
                for item in alternatives:
                    hit = _find(item, roots)
                    if hit is not None:
                        found[ci] = (item, hit)
                        break
                else:
                    missing.append(ci)
            if not missing:
                break
            # Extract archives that may hold a missing item: first the hinted ones, else all.
            candidates = [a for a in _find_archives(roots) if a.resolve() not in extracted]
            hints = {h.lower() for ci in missing for it in spec.components[ci]
                     for h in (it.hints or ((it.name,) if it.name else ()))}
            hinted = [a for a in candidates if archive_stem(a).lower() in hints]
            chosen = hinted or candidates
            if not chosen:
                break
            for a in chosen:
                out = staging / f"{len(extracted):02d}_{archive_stem(a)}"
                log(f"extract {a}")
                extracted.add(a.resolve())
                try:
                    extract_archive(a, out)
                except PrepareError as exc:
                    if hinted:
                        raise
                    log(f"  skipped: {exc}")  # an unrelated file that merely looks like an archive
        missing_labels = [
            " or ".join(it.label for it in spec.components[ci]) for ci in range(len(spec.components)) if ci not in found
        ]
        if missing_labels:
            raise PrepareError(
                f"{spec.name}: required items not found in {', '.join(map(str, sources))}; "
                f"download {spec.downloads}",
                [f"missing: {m}" for m in missing_labels],
            )
        log(f"placing {spec.name} into {target_dir}")
        staging_resolved = staging.resolve()
        for ci in sorted(found):
            item, hit = found[ci]
            owned = staging_resolved in hit.resolve().parents
            target = target_dir / item.target if item.target else target_dir
            _place(hit, target, mode, owned, overwrite, log)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    check(spec.name, dest, check_images=check_images, log=log)
    return target_dir


# ----------------------------------------------------------------------- validate


def _layout_problems(spec: PrepareSpec, root: Path) -> list[str]:
    problems = []
    base = root / spec.folder
    for alternatives in spec.components:
        ok = False
        for item in alternatives:
            p = base / item.target if item.target else base
            if item.kind == "file" and p.is_file():
                ok = True
            elif item.kind == "dir" and p.is_dir() and all((p / c).exists() for c in item.contains):
                ok = True
            if ok:
                break
        if not ok:
            wanted = " or ".join(
                f"{base / it.target if it.target else base}{'/' if it.kind == 'dir' else ''}"
                + (f" (with {', '.join(it.contains)})" if it.contains else "")
                for it in alternatives
            )
            problems.append(f"missing: {wanted}")
    return problems


def check(
    name: str,
    root: Optional[Union[str, os.PathLike]] = None,
    *,
    check_images: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> dict[str, tuple[int, int]]:
    """Validate a prepared dataset under the data root ``root``.

    Checks that the required files exist, loads every split with its loader
    and (with ``check_images``) checks that every referenced image file exists.

    Returns:
        dict: ``{split: (num_images, num_classes)}``.

    Raises:
        PrepareError: Listing every missing file / problem found.
    """
    from gca.data.base import ImageListDataset
    from gca.data.registry import create_dataset, dataset_splits
    from gca.data.root import resolve_data_root

    log = log or (lambda msg: None)
    spec = _spec(name)
    try:
        root_path = resolve_data_root(root)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        raise PrepareError(f"{spec.name}: {exc}") from exc
    problems = _layout_problems(spec, root_path)
    summary: dict[str, tuple[int, int]] = {}
    if not problems:
        for split in dataset_splits(spec.name):
            if split == "all":
                continue
            try:
                ds = create_dataset(spec.name, root=root_path, split=split)
            except (OSError, ValueError, ImportError) as exc:
                problems.append(f"split {split!r}: {exc}")
                continue
            if check_images and isinstance(ds, ImageListDataset):
                missing = ds.missing_files()
                if missing:
                    problems.append(
                        f"split {split!r}: {len(missing)} of {len(ds)} image files missing, e.g. "
                        + ", ".join(missing[:5])
                    )
            if len(ds) == 0:
                problems.append(f"split {split!r} is empty")
            summary[split] = (len(ds), ds.num_classes)
            log(f"  {spec.name}/{split}: {len(ds)} images, {ds.num_classes} classes")
    if problems:
        raise PrepareError(f"{spec.name} under {str(root_path)!r} is incomplete or invalid:", problems)
    return summary


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the prepare options to ``parser`` (for embedding as a ``gca prepare`` sub-command)."""
    parser.add_argument("name", nargs="?", help=f"dataset: {', '.join(sorted(PREPARE_SPECS))}")
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="SOURCE [SOURCE ...] DEST: archives / files / folders, then the data root to write to. "
        "With --check: [ROOT] (default: $GCA_DATA_ROOT or ../shared/data).",
    )
    parser.add_argument("--mode", choices=("copy", "move", "symlink"), default="copy",
                        help="how to place items found in extracted source folders (default: copy)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files at the destination")
    parser.add_argument("--no-image-check", action="store_true", help="do not verify that every image file exists")
    parser.add_argument("--check", action="store_true", help="only validate an existing layout under ROOT")
    parser.add_argument("--list", action="store_true", help="list the datasets that can be prepared and exit")
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute parsed arguments (see :func:`add_arguments`); returns an exit status."""
    if args.list:
        for name, spec in sorted(PREPARE_SPECS.items()):
            print(f"{name:<11} -> <root>/{spec.folder:<25} from {spec.downloads}")
        return 0
    if not args.name:
        print("error: dataset name required (see --list)", file=sys.stderr)
        return 2
    try:
        if args.check:
            if len(args.paths) > 1:
                print("error: --check takes at most one ROOT", file=sys.stderr)
                return 2
            summary = check(args.name, args.paths[0] if args.paths else None,
                            check_images=not args.no_image_check, log=print)
            print(f"{args.name}: OK " + ", ".join(f"{s}={n} images/{c} classes" for s, (n, c) in summary.items()))
            return 0
        if len(args.paths) < 2:
            print("error: need SOURCE [SOURCE ...] DEST", file=sys.stderr)
            return 2
        *sources, dest = args.paths
        out = prepare(args.name, sources, dest, mode=args.mode, overwrite=args.overwrite,
                      check_images=not args.no_image_check, log=print)
        print(f"{args.name}: prepared in {out}")
        return 0
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: ``python -m gca.data.prepare NAME SOURCE... DEST``.

    Returns the exit status (0 success, 1 preparation/validation failed,
    2 usage error).
    """
    parser = argparse.ArgumentParser(
        prog="python -m gca.data.prepare",
        description="Put downloaded dataset archives into the layout gca.data reads, and validate it.",
        epilog="Examples:\n"
        "  python -m gca.data.prepare cub200 CUB_200_2011.tgz ../shared/data\n"
        "  python -m gca.data.prepare cars196 car_ims.tgz cars_annos.mat ../shared/data\n"
        "  python -m gca.data.prepare inshop img.zip list_eval_partition.txt ../shared/data\n"
        "  python -m gca.data.prepare --check sop ../shared/data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
