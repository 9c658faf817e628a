import pickle
import tarfile
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_shared import UserError
from cifar_shared.data import sources
from cifar_shared.data.sources import (
    load_cifar,
    load_folder_splits,
    load_image_folder,
    make_synthetic,
    split_train_val,
)
from cifar_shared.testing import write_cifar10


def test_cifar10_pickles_decode_to_nchw(cifar10_root):
    train, test = load_cifar("cifar10", cifar10_root, download=False)
    assert train.images.shape == (100, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (10, 3, 32, 32) and train.labels.dtype == torch.int64
    assert train.classes[0] == "airplane" and train.num_classes == 10
    raw = pickle.load(open(cifar10_root / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="latin1")
    row = raw["data"][3]  # 1024 red, then green, then blue, row-major
    assert torch.equal(train.images[3, 1, 2, 5], torch.tensor(row[1024 + 2 * 32 + 5], dtype=torch.uint8))
    assert train.labels[3] == raw["labels"][3]


def test_root_may_be_the_batches_folder_itself(cifar10_root):
    train, _ = load_cifar("cifar10", cifar10_root / "cifar-10-batches-py", download=False)
    assert len(train) == 100


def test_official_archive_is_extracted(tmp_path):
    write_cifar10(tmp_path / "src")
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    train, test = load_cifar("cifar10", archive.parent, download=False)
    assert len(train) == 100 and len(test) == 10


def test_cifar100_format(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}, open(folder / "meta", "wb"))
    for name, n in (("train", 50), ("test", 20)):
        pickle.dump({"fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": [0] * n, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}, open(folder / name, "wb"))
    train, test = load_cifar("cifar100", tmp_path, download=False)
    assert train.num_classes == 100 and len(train) == 50 and len(test) == 20


def test_truncated_pickle_is_a_user_error_naming_the_file(cifar10_root):
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="data_batch_2 is truncated or corrupt"):
        load_cifar("cifar10", cifar10_root, download=False)


def test_missing_data_without_download_names_the_fix(tmp_path):
    with pytest.raises(UserError, match="no cifar10 data under .*data.root"):
        load_cifar("cifar10", tmp_path, download=False)


def test_failed_download_is_one_user_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(UserError, match="download failed") as err:
        load_cifar("cifar10", tmp_path / "nothing", download=True)
    assert "\n" not in str(err.value)


def _write_folder(root, classes=("cat", "dog"), per_class=4, size=40):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_decodes_resizes_and_caches(tmp_path):
    _write_folder(tmp_path / "imgs")
    data = load_image_folder(tmp_path / "imgs", 32, tmp_path / "cache")
    assert data.images.shape == (8, 3, 32, 32) and data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    cached = list((tmp_path / "cache").glob("folder-*.pt"))
    assert len(cached) == 1
    again = load_image_folder(tmp_path / "imgs", 32, tmp_path / "cache")
    assert torch.equal(again.images, data.images)


def test_image_folder_with_train_and_test(tmp_path):
    _write_folder(tmp_path / "train")
    _write_folder(tmp_path / "test", per_class=2)
    train, test = load_folder_splits(tmp_path, 32, 0.1, 0, None)
    assert len(train) == 8 and len(test) == 4


def test_empty_and_unreadable_folders_are_user_errors(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="has no images"):
        load_image_folder(tmp_path / "empty", 32, None)
    _write_folder(tmp_path / "bad")
    (tmp_path / "bad" / "cat" / "9.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image .*9.png"):
        load_image_folder(tmp_path / "bad", 32, None)


def test_synthetic_is_seeded_and_balanced():
    a, _ = make_synthetic(10, 200, 50, 32, seed=1)
    b, _ = make_synthetic(10, 200, 50, 32, seed=1)
    c, _ = make_synthetic(10, 200, 50, 32, seed=2)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.bincount(a.labels).tolist() == [20] * 10


def test_split_is_seeded_and_disjoint():
    data, _ = make_synthetic(10, 100, 10, 8, seed=0)
    data.images[:, 0, 0, 0] = torch.arange(100, dtype=torch.uint8)  # tag each image
    tr1, va1 = split_train_val(data, 0.2, seed=5)
    tr2, va2 = split_train_val(data, 0.2, seed=5)
    assert len(tr1) == 80 and len(va1) == 20 and torch.equal(va1.images, va2.images)
    ids = lambda s: set(s.images[:, 0, 0, 0].tolist())  # noqa: E731
    assert ids(tr1).isdisjoint(ids(va1)) and len(ids(tr1) | ids(va1)) == 100


def test_unknown_source():
    with pytest.raises(UserError, match="unknown data source 'mnist'"):
        sources.load_source({"name": "mnist"})


def test_real_subset_loads(real_subset):
    train, test = load_cifar("cifar10", real_subset, download=False)
    assert len(train) == 4660 and len(test) == 423


def test_export_roundtrips_through_the_folder_source(tmp_path, cifar10_root):
    import csv

    from cifar_shared.data.tools import export_main

    export_main(["--data", "cifar10", "--root", str(cifar10_root), "--out", str(tmp_path / "png")])
    rows = list(csv.DictReader(open(tmp_path / "png" / "train" / "labels.csv")))
    assert len(rows) == 100 and set(rows[0]) == {"file", "label", "class"}
    original, test = load_cifar("cifar10", cifar10_root, download=False)
    back, back_test = load_folder_splits(tmp_path / "png", 32, 0.1, 0, None)
    assert len(back) == 100 and len(back_test) == len(test)
    # class folders sort alphabetically, as CIFAR-10's names already do; pixels survive PNG exactly
    order = sorted(range(100), key=lambda i: (original.labels[i].item(), i))
    assert torch.equal(back.images, original.images[order]) and back.classes == original.classes


def test_stats_command_prints_overrides_that_set_the_measured_normalization(capsys, cifar10_root):
    from hydra import compose, initialize_config_module

    from cifar_shared.data.sources import load_source
    from cifar_shared.data.stats import channel_stats
    from cifar_shared.data.tools import stats_main

    stats_main(["--data", "cifar10", "--root", str(cifar10_root)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    overrides = line.split()
    assert [o.split("=")[0] for o in overrides] == ["data.mean", "data.std"]
    with initialize_config_module("cifar_shared.conf", version_base=None), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Defaults list is missing `_self_`", category=UserWarning)  # train_base is meant to be included
        cfg = compose("train_base", overrides=["name=t", *overrides])
    mean, std = channel_stats(load_source({"name": "cifar10", "root": str(cifar10_root), "download": False})[0].images)
    assert list(cfg.data.mean) == pytest.approx(list(mean), abs=5e-5)
    assert list(cfg.data.std) == pytest.approx(list(std), abs=5e-5)


def test_empty_class_folder_is_a_user_error(tmp_path):
    _write_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "empty_class").mkdir()
    with pytest.raises(UserError, match="class folder .*empty_class has no images: add some, or remove the folder"):
        load_image_folder(tmp_path / "imgs", 32, None)


def test_mixed_sizes_and_modes_are_converted_to_rgb_at_image_size(tmp_path):
    """Decision: convert (RGB) and resize (bilinear) rather than refuse; a folder of phone photos
    and PNG icons is normal input. Grey stays grey, transparency is dropped."""
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    Image.new("L", (40, 30), 200).save(root / "a" / "grey.png")
    Image.new("RGBA", (32, 32), (10, 20, 30, 0)).save(root / "a" / "alpha.png")
    Image.new("P", (64, 64), 3).save(root / "b" / "palette.png")
    Image.new("RGB", (17, 50), (255, 0, 0)).save(root / "b" / "red.jpg")
    data = load_image_folder(root, 32, None)
    assert data.images.shape == (4, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.images[0].unique().tolist() == [10, 20, 30] or data.images[0][:, 5, 5].tolist() == [10, 20, 30]
    assert data.images[1][:, 5, 5].tolist() == [200, 200, 200]
    assert data.images[3][0].float().mean() > 240 and data.images[3][1:].float().mean() < 15


def test_labels_outside_the_classes_are_a_user_error(cifar10_root):
    batch_file = cifar10_root / "cifar-10-batches-py" / "data_batch_2"
    with open(batch_file, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    batch["labels"][0] = 10  # ten classes: 0..9
    with open(batch_file, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(UserError, match="has labels outside 0..9: the files are corrupt"):
        load_cifar("cifar10", cifar10_root, download=False)


# --------------------------------------------------------------------------- files from users are data

def _exec_payload(marker):
    """An object whose unpickling runs code (creates ``marker``): what a crafted batch file holds."""

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    return Payload()


def test_a_crafted_batch_file_is_refused_before_its_code_runs(cifar10_root, tmp_path):
    marker = tmp_path / "code-ran"
    crafted = pickle.dumps({"data": _exec_payload(marker), "labels": [0]}, protocol=2)
    pickle.loads(crafted)  # the payload is real: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    (cifar10_root / "cifar-10-batches-py" / "data_batch_1").write_bytes(crafted)
    with pytest.raises(UserError, match=r"data_batch_1 is not a CIFAR data file: its pickle imports (__builtin__|builtins).exec") as err:
        load_cifar("cifar10", cifar10_root, download=False)
    assert not marker.exists() and "\n" not in str(err.value)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_the_restricted_unpickler_reads_every_protocol_numpy_writes(tmp_path, protocol):
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": data, "labels": [1, 2], "batch_label": "b", "raw": b"\x00\xff"}, protocol=protocol))
    batch = sources._unpickle(path)
    assert np.array_equal(batch["data"], data) and batch["labels"] == [1, 2] and batch["raw"] == b"\x00\xff"


@pytest.mark.parametrize("name, proof", [("cifar10-full", "cifar-10-batches-py/test_batch"), ("cifar100-subset", "cifar-100-python/test")])
def test_the_official_pickles_load_through_the_restricted_unpickler(name, proof):
    """cifar10-full holds the official python-2 files byte for byte (the globals they name are the
    allow-list's numpy ones); cifar100-subset the official layout."""
    from cifar_shared.testing import real_subset_or_skip

    path = real_subset_or_skip(name) / proof
    batch = sources._unpickle(path)
    assert batch["data"].dtype == np.uint8 and batch["data"].shape[1] == 3072 and len(batch["data"]) > 0


def _rewrite_batch(root, name, **changes):
    path = root / "cifar-10-batches-py" / name
    batch = pickle.loads(path.read_bytes(), encoding="latin1")
    batch.update(changes)
    path.write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar_pixels_that_are_not_uint8_are_refused_not_wrapped(cifar10_root):
    """float32 pixels in [0, 1] used to be cast to uint8 (all 0): a black data set, trained on."""
    _rewrite_batch(cifar10_root, "data_batch_3", data=np.random.default_rng(0).random((20, 3072), dtype=np.float32))
    with pytest.raises(UserError, match=r"data_batch_3 holds float32 pixels, not the official uint8"):
        load_cifar("cifar10", cifar10_root, download=False)


def test_an_empty_batch_and_string_labels_are_refused(cifar10_root):
    _rewrite_batch(cifar10_root, "test_batch", data=np.zeros((0, 3072), np.uint8), labels=[])
    with pytest.raises(UserError, match=r"test_batch holds no images"):
        load_cifar("cifar10", cifar10_root, download=False)
    _rewrite_batch(cifar10_root, "test_batch", data=np.zeros((3, 3072), np.uint8), labels=["cat", "dog", "cat"])
    with pytest.raises(UserError, match=r"test_batch has <U3 labels, not class numbers 0..9"):
        load_cifar("cifar10", cifar10_root, download=False)


def test_a_16_bit_grey_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    """PIL's convert('RGB') clips 16-bit greys to 255 (a white data set); v must read as round(v / 257)."""
    values = np.array([[0, 128, 129, 385, 386], [257, 30000, 40000, 65407, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    pixels = sources.read_image(tmp_path / "grey16.png")
    expected = np.round(values / 257).astype(np.uint8)
    assert pixels.shape == (2, 5, 3) and pixels.dtype == np.uint8
    assert (pixels == expected[..., None]).all(), pixels[..., 0]


def test_a_float_tiff_is_refused_not_read_as_black(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(UserError, match=r"cannot read image .*float.tiff: it holds 32-bit floating-point pixels \(mode F\)"):
        sources.read_image(tmp_path / "float.tiff", (32, 32))


def test_a_folder_too_small_to_hold_out_a_test_image_says_so(tmp_path):
    _write_folder(tmp_path / "imgs", per_class=1)
    with pytest.raises(UserError, match=r"has only 2 images: data.test_fraction=0.1 of them rounds to no test image; add images \(at least 6\)"):
        load_folder_splits(tmp_path / "imgs", 32, 0.1, 0, None)
