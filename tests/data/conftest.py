"""Tiny copies of the paper datasets, written in their original on-disk formats.

Every builder writes a few classes with a few tiny images (PIL generated)
and annotation files in the exact original format, and returns the *data
root* (the folder that holds the dataset folder), like ``../shared/data``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from PIL import Image

# Real (read-only) data: $GCA_DATA_ROOT if set when the tests start, else ../shared/data from the repo root.
REAL_DATA = Path(
    os.environ.get("GCA_DATA_ROOT") or Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
).resolve()


def write_image(path: Path, seed: int, size=(12, 10), mode="RGB", fmt=None) -> Path:
    """Write a small noise image (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format=fmt)
    return path


def truncate_file(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])


# ------------------------------------------------------------------------ CUB


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]
CUB_COUNTS = [3, 2, 4, 3]


def build_cub(root: Path) -> Path:
    base = root / "CUB_200_2011"
    images, labels, split = [], [], []
    iid = 0
    for cid, (cname, n) in enumerate(zip(CUB_CLASSES, CUB_COUNTS), start=1):
        for j in range(n):
            iid += 1
            rel = f"{cname}/{cname.split('.', 1)[1]}_{j:04d}_{iid}.jpg"
            write_image(base / "images" / rel, seed=iid)
            images.append(f"{iid} {rel}")
            labels.append(f"{iid} {cid}")
            split.append(f"{iid} {j % 2}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{i} {c}" for i, c in enumerate(CUB_CLASSES, start=1)) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    return root


# ---------------------------------------------------------------------- Cars196


CARS_CLASS_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012", "Acura TL Type-S 2008"]
# class id of each image, in file order (1-based like the original)
CARS_IMAGE_CLASSES = [1, 1, 2, 3, 3, 3, 4, 2, 4]


def write_cars_annos(path: Path, image_classes, class_names, drop_field: Optional[str] = None) -> None:
    from scipy.io import savemat

    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    if drop_field:
        fields.remove(drop_field)
    ann = np.zeros((1, len(image_classes)), dtype=[(f, "O") for f in fields])
    for i, cid in enumerate(image_classes):
        row = {
            "relative_im_path": f"car_ims/{i + 1:06d}.jpg",
            "bbox_x1": np.array([[1]], dtype=np.uint8),
            "bbox_y1": np.array([[2]], dtype=np.uint8),
            "bbox_x2": np.array([[9]], dtype=np.uint8),
            "bbox_y2": np.array([[8]], dtype=np.uint8),
            "class": np.array([[cid]], dtype=np.uint8),
            "test": np.array([[i % 2]], dtype=np.uint8),
        }
        for f in fields:
            ann[0, i][f] = row[f]
    names = np.empty((1, len(class_names)), dtype=object)
    for i, n in enumerate(class_names):
        names[0, i] = n
    savemat(str(path), {"annotations": ann, "class_names": names})


def build_cars(root: Path) -> Path:
    base = root / "cars196"
    base.mkdir(parents=True, exist_ok=True)
    for i in range(len(CARS_IMAGE_CLASSES)):
        write_image(base / "car_ims" / f"{i + 1:06d}.jpg", seed=100 + i)
    write_cars_annos(base / "cars_annos.mat", CARS_IMAGE_CLASSES, CARS_CLASS_NAMES)
    return root


# -------------------------------------------------------------------------- SOP


# (image_id, class_id, super_class_id, path)
SOP_TRAIN = [
    (1, 1, 1, "bicycle_final/111085122871_0.JPG"),
    (2, 1, 1, "bicycle_final/111085122871_1.JPG"),
    (3, 2, 1, "bicycle_final/111265328556_0.JPG"),
    (4, 5, 2, "chair_final/111459398710_0.JPG"),
    (5, 5, 2, "chair_final/111459398710_1.JPG"),
]
SOP_TEST = [
    (6, 7, 1, "bicycle_final/251952414262_0.JPG"),
    (7, 9, 2, "chair_final/381368493440_0.JPG"),
    (8, 9, 2, "chair_final/381368493440_1.JPG"),
]


def _write_ebay(path: Path, rows) -> None:
    path.write_text("image_id class_id super_class_id path\n" + "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in rows))


def build_sop(root: Path) -> Path:
    base = root / "Stanford_Online_Products"
    for iid, _, _, rel in SOP_TRAIN + SOP_TEST:
        write_image(base / rel, seed=200 + iid, fmt="JPEG")
    _write_ebay(base / "Ebay_train.txt", SOP_TRAIN)
    _write_ebay(base / "Ebay_test.txt", SOP_TEST)
    (base / "Ebay_info.txt").write_text("image_id class_id super_class_id path\n")
    return root


# ----------------------------------------------------------------------- In-Shop


INSHOP_ROWS = [
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "train"),
    ("img/WOMEN/Skirts/id_00000010/01_1_front.jpg", "id_00000010", "query"),
    ("img/WOMEN/Skirts/id_00000010/01_2_side.jpg", "id_00000010", "gallery"),
    ("img/WOMEN/Skirts/id_00000010/01_3_back.jpg", "id_00000010", "gallery"),
    ("img/MEN/Shirts/id_00000005/02_1_front.jpg", "id_00000005", "query"),
    ("img/MEN/Shirts/id_00000005/02_2_side.jpg", "id_00000005", "gallery"),
    ("img/MEN/Pants/id_00000042/03_1_front.jpg", "id_00000042", "gallery"),
]


def write_inshop_partition(path: Path, rows, count: Optional[int] = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [str(len(rows) if count is None else count), "image_name item_id evaluation_status"]
    lines += [f"{name:<70}{item:<16}{status}" for name, item, status in rows]
    path.write_text("\n".join(lines) + "\n")


def build_inshop(root: Path) -> Path:
    base = root / "inshop"
    for i, (name, _, _) in enumerate(INSHOP_ROWS):
        write_image(base / name, seed=300 + i)
    write_inshop_partition(base / "Eval" / "list_eval_partition.txt", INSHOP_ROWS)
    return root


# ---------------------------------------------------------------------- Omniglot


OMNIGLOT_BG = {"Alphabet_of_the_Magi": 2, "Greek": 3}  # alphabet -> characters
OMNIGLOT_EVAL = {"Atlantean": 2}
OMNIGLOT_DRAWINGS = 3


def write_omniglot_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.random((105, 105)) > 0.1  # True = background (white), like the release
    Image.fromarray(arr).save(path)  # mode "1"


def build_omniglot_folders(root: Path, base_name: str = "omniglot") -> Path:
    seed = 0
    for set_name, alphabets in (("images_background", OMNIGLOT_BG), ("images_evaluation", OMNIGLOT_EVAL)):
        for alphabet, n_chars in alphabets.items():
            for c in range(1, n_chars + 1):
                for d in range(1, OMNIGLOT_DRAWINGS + 1):
                    seed += 1
                    write_omniglot_png(
                        root / base_name / set_name / alphabet / f"character{c:02d}" / f"{1000 + c:04d}_{d:02d}.png",
                        seed,
                    )
    return root


def build_omniglot_npz(root: Path, classes=(3, 2), drawings=4, side=10) -> Path:
    """npz pair in the shared-data format; True is stored as byte 0xFF (non-canonical bool)."""
    (root / "omniglot").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in zip(("images_background", "images_evaluation"), classes):
        raw = np.where(rng.random((n, drawings, side, side)) > 0.2, 255, 0).astype(np.uint8)
        images = raw.view(np.bool_)
        labels = np.repeat(np.arange(n, dtype=np.int64)[:, None], drawings, axis=1)
        np.savez_compressed(root / "omniglot" / f"{name}.npz", images=images, labels=labels)
    return root


# ------------------------------------------------------------ shared checks


def _check_common(ds, n_items, n_classes):
    assert len(ds) == n_items
    assert ds.num_classes == n_classes == len(ds.class_names)
    assert isinstance(ds.labels, np.ndarray) and ds.labels.dtype == np.int64 and ds.labels.ndim == 1
    assert sorted(set(ds.labels.tolist())) == list(range(n_classes))
    img, label = ds[0]
    assert isinstance(label, int) and label == ds.labels[0]
    return img


# ------------------------------------------------------------------- fixtures


@pytest.fixture
def cub_root(tmp_path):
    return build_cub(tmp_path / "data")


@pytest.fixture
def cars_root(tmp_path):
    pytest.importorskip("scipy")
    return build_cars(tmp_path / "data")


@pytest.fixture
def sop_root(tmp_path):
    return build_sop(tmp_path / "data")


@pytest.fixture
def inshop_root(tmp_path):
    return build_inshop(tmp_path / "data")


@pytest.fixture
def omniglot_folder_root(tmp_path):
    return build_omniglot_folders(tmp_path / "data")


@pytest.fixture
def folder(tmp_path):
    """A class-per-folder image tree (6 classes of 1..6 images) with a stray file and a hidden folder."""
    root = tmp_path / "flowers"
    for i, name in enumerate(["tulip", "Rose", "daisy", "iris", "lily", "aster"]):
        for j in range(i + 1):
            write_image(root / name / f"{j}.png" if j % 2 else root / name / f"{j}.jpg", seed=i * 7 + j)
    (root / "notes.txt").write_text("not a class")
    (root / ".hidden").mkdir()
    return root


@pytest.fixture
def real_data():
    if not (REAL_DATA / "omniglot").is_dir() and not (REAL_DATA / "caltech101").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch):
    """Tests must not depend on the caller's GCA_DATA_ROOT."""
    monkeypatch.delenv("GCA_DATA_ROOT", raising=False)


@pytest.fixture(scope="session")
def builders():
    """The builder functions and constants of this module (tests must not import conftest)."""
    import types

    return types.SimpleNamespace(**{k: v for k, v in globals().items() if not k.startswith("_") and k.isidentifier()})


@pytest.fixture(scope="session")
def check_common():
    """Checks every dataset loader must pass: ``check_common(ds, n_items, n_classes)`` returns ``ds[0][0]``."""
    return _check_common
