"""gca.data.prepare: archives -> loader layout, validation and CLI."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Optional

import pytest

from gca.data import create_dataset
from gca.data.prepare import PREPARE_SPECS, PrepareError, check, extract_archive, main, prepare

REPO = Path(__file__).resolve().parents[2]


def make_tgz(src_dir: Path, out: Path, arcname: Optional[str] = None) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(src_dir, arcname=arcname or src_dir.name)
    return out


def make_zip(src_dir: Path, out: Path, arc_root: Optional[str] = None) -> Path:
    arc_root = src_dir.name if arc_root is None else arc_root
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(src_dir.rglob("*")):
            zf.write(p, str(Path(arc_root) / p.relative_to(src_dir)) if arc_root else str(p.relative_to(src_dir)))
    return out


def test_specs_cover_paper_datasets():
    assert {"cub200", "cars196", "sop", "inshop", "omniglot", "caltech101"} <= set(PREPARE_SPECS)


def test_prepare_cub_from_tgz(tmp_path, builders):
    src = builders.build_cub(tmp_path / "src")
    (src / "attributes.txt").write_text("1 has_bill_shape::curved\n")
    tgz = make_tgz(src / "CUB_200_2011", tmp_path / "CUB_200_2011.tgz")
    dest = tmp_path / "data"
    out = prepare("cub200", tgz, dest)
    assert out == dest / "CUB_200_2011" and (out / "images.txt").is_file()
    assert len(create_dataset("cub200", root=dest, split="test")) == 7
    assert [p.name for p in dest.iterdir()] == ["CUB_200_2011"]  # temp folder removed
    assert check("cub", dest) == {"train": (5, 2), "test": (7, 2)}
    # preparing again: already exists
    with pytest.raises(PrepareError, match="already exists.*overwrite"):
        prepare("cub200", tgz, dest)
    prepare("cub200", tgz, dest, overwrite=True)


def test_prepare_cars_archive_plus_mat(tmp_path, builders):
    pytest.importorskip("scipy")
    src = builders.build_cars(tmp_path / "src") / "cars196"
    tgz = make_tgz(src / "car_ims", tmp_path / "car_ims.tgz")
    dest = tmp_path / "data"
    prepare("cars196", [tgz, src / "cars_annos.mat"], dest)
    assert (dest / "cars196" / "car_ims" / "000001.jpg").is_file()
    train = create_dataset("cars196", root=dest, split="train")
    assert train.num_classes == 2 and train[0][0].mode == "RGB"
    assert (src / "cars_annos.mat").is_file()  # loose file copied, not moved


def test_prepare_cars_missing_images_lists_them(tmp_path, builders):
    pytest.importorskip("scipy")
    src = builders.build_cars(tmp_path / "src") / "cars196"
    with pytest.raises(PrepareError, match="required items not found") as e:
        prepare("cars196", src / "cars_annos.mat", tmp_path / "data")
    assert any("car_ims/" in p for p in e.value.problems)
    assert not any("cars_annos" in p for p in e.value.problems)
    assert "car_ims.tgz" in str(e.value)
    assert not any(p.name.startswith(".gca_prepare_") for p in (tmp_path / "data").iterdir())


def test_prepare_sop_zip_and_validation_of_images(tmp_path, builders):
    src = builders.build_sop(tmp_path / "src")
    z = make_zip(src / "Stanford_Online_Products", tmp_path / "Stanford_Online_Products.zip")
    dest = tmp_path / "data"
    prepare("sop", z, dest)
    assert create_dataset("sop", root=dest, split="train").num_classes == 3
    victim = dest / "Stanford_Online_Products" / "chair_final" / "381368493440_1.JPG"
    victim.unlink()
    with pytest.raises(PrepareError, match="incomplete or invalid") as e:
        check("sop", dest)
    assert any("split 'test': 1 of 3 image files missing" in p and "381368493440_1.JPG" in p for p in e.value.problems)


def test_prepare_inshop_from_download_folder_with_nested_zip(tmp_path, builders):
    src = builders.build_inshop(tmp_path / "src") / "inshop"
    downloads = tmp_path / "downloads"
    (downloads / "Img").mkdir(parents=True)
    (downloads / "Eval").mkdir()
    make_zip(src / "img", downloads / "Img" / "img.zip")
    shutil.copy(src / "Eval" / "list_eval_partition.txt", downloads / "Eval")
    (downloads / "unrelated.zip").write_bytes(b"not extracted because the hinted archive is enough")
    dest = tmp_path / "data"
    prepare("inshop", downloads, dest)
    q = create_dataset("inshop", root=dest, split="query")
    g = create_dataset("inshop", root=dest, split="gallery")
    assert len(q) == 2 and len(g) == 4 and q.class_names == g.class_names


def test_prepare_omniglot_nested_release_zip(tmp_path, builders):
    release = builders.build_omniglot_folders(tmp_path / "src", base_name="omniglot")
    py = tmp_path / "omniglot-master" / "python"
    py.mkdir(parents=True)
    for set_name in ("images_background", "images_evaluation"):
        make_zip(release / "omniglot" / set_name, py / f"{set_name}.zip")
    outer = make_zip(tmp_path / "omniglot-master", tmp_path / "omniglot-master.zip")
    dest = tmp_path / "data"
    prepare("omniglot", outer, dest)
    assert (dest / "omniglot" / "images_background" / "Greek" / "character03").is_dir()
    tr = create_dataset("omniglot", root=dest, split="train")
    assert tr.format == "folder" and tr.num_classes == sum(builders.OMNIGLOT_BG.values())


def test_prepare_omniglot_npz_files(tmp_path, builders):
    src = builders.build_omniglot_npz(tmp_path / "src") / "omniglot"
    dest = tmp_path / "data"
    prepare("omniglot", [src / "images_background.npz", src / "images_evaluation.npz"], dest)
    assert create_dataset("omniglot", root=dest, split="test").format == "npz"


def test_prepare_extracted_folder_symlink_and_move(tmp_path, builders):
    src = builders.build_cub(tmp_path / "src")
    dest = tmp_path / "data"
    prepare("cub200", src / "CUB_200_2011", dest, mode="symlink")
    assert (dest / "CUB_200_2011").is_symlink()
    assert len(create_dataset("cub200", root=dest)) == 5
    # source already in place (dest == source root): nothing to do, still validated
    prepare("cub200", src, src)
    dest2 = tmp_path / "data2"
    prepare("cub200", src, dest2, mode="move")
    assert not (src / "CUB_200_2011").exists() and (dest2 / "CUB_200_2011" / "classes.txt").is_file()


def test_prepare_caltech_nested_tar(tmp_path, builders):
    cats = tmp_path / "build" / "101_ObjectCategories"
    for i, n in enumerate(["BACKGROUND_Google", "Faces", "ant", "beaver"]):
        for j in range(2):
            builders.write_image(cats / n / f"image_{j + 1:04d}.jpg", seed=i * 3 + j)
    inner = tmp_path / "outer" / "caltech-101"
    inner.mkdir(parents=True)
    make_tgz(cats, inner / "101_ObjectCategories.tar.gz")
    outer = make_zip(tmp_path / "outer", tmp_path / "caltech-101.zip", arc_root="")
    dest = tmp_path / "data"
    prepare("caltech101", outer, dest)
    assert create_dataset("caltech101", root=dest, split="train").class_names == ["Faces"]
    assert create_dataset("caltech101", root=dest, split="test").class_names == ["ant", "beaver"]


def test_prepare_errors(tmp_path):
    with pytest.raises(PrepareError, match="source path"):
        prepare("cub200", tmp_path / "nope.tgz", tmp_path / "d")
    bad = tmp_path / "CUB_200_2011.tgz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(PrepareError, match="CUB_200_2011.tgz"):
        prepare("cub200", bad, tmp_path / "d")
    with pytest.raises(PrepareError, match="cannot prepare dataset 'imagefolder'"):
        prepare("imagefolder", tmp_path, tmp_path / "d")
    with pytest.raises(PrepareError, match="missing: .*CUB_200_2011/ \\(with images.txt"):
        check("cub200", tmp_path)
    with pytest.raises(PrepareError, match="does not exist"):
        check("cub200", tmp_path / "no_root")


def test_extract_archive_rejects_unsafe_paths(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(PrepareError, match="unsafe path"):
        extract_archive(z, tmp_path / "out")
    t = tmp_path / "evil.tar"
    with tarfile.open(t, "w") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(PrepareError):
        extract_archive(t, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()


def test_cli_main(tmp_path, builders, capsys):
    src = builders.build_sop(tmp_path / "src")
    dest = tmp_path / "data"
    assert main(["--list"]) == 0
    assert "Stanford_Online_Products" in capsys.readouterr().out
    assert main(["sop", str(src / "Stanford_Online_Products"), str(dest)]) == 0
    assert "prepared in" in capsys.readouterr().out
    assert main(["--check", "sop", str(dest)]) == 0
    assert "sop: OK train=5 images/3 classes, test=3 images/2 classes" in capsys.readouterr().out
    assert main(["--check", "cub200", str(dest)]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["sop", str(dest)]) == 2


def test_datasets_prepare_script_runs():
    out = subprocess.run(
        [sys.executable, str(REPO / "datasets" / "prepare.py"), "--list"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert "cub200" in out.stdout and "CUB_200_2011" in out.stdout


def test_prepare_skips_unrelated_broken_archive_in_fallback(tmp_path, builders):
    src = builders.build_sop(tmp_path / "src")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    make_zip(src / "Stanford_Online_Products", downloads / "products_v1.zip")  # not named like the hint
    (downloads / "broken.zip").write_bytes(b"PK garbage")
    dest = tmp_path / "data"
    prepare("sop", downloads, dest)
    assert create_dataset("sop", root=dest, split="test").num_classes == 2
