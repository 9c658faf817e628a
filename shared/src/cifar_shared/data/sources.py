"""Data sources. Every source returns the same thing: an ``ImageSet`` per split.

An ``ImageSet`` is the whole split in memory (uint8 N×3×H×W, int64 labels, class names): CIFAR is
small enough that keeping it as one tensor is both the simplest and the fastest representation.
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cifar_shared.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, 3, H, W)
    labels: torch.Tensor  # int64, (N,)
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N,3,H,W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.classes)


def split_train_val(data: ImageSet, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """Seeded random split; the same seed always gives the same validation images."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(len(data) * val_fraction))
    if n_val == 0:
        return data, None
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[n_val:]), data.subset(order[:n_val])


# --------------------------------------------------------------------------- CIFAR (python format)

_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", "label_names"),
        "label_key": "labels",
        "torchvision": "CIFAR10",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", "fine_label_names"),
        "label_key": "fine_labels",
        "torchvision": "CIFAR100",
    },
}


# Every global the official python-format files reference (numpy's array reconstruction), plus what
# the same data re-saved by Python 3 names: protocol 2 writes bytes as _codecs.encode (bytes() when
# empty), protocol 5 arrays as numpy's _frombuffer. Whatever else a pickle names is refused before
# it is imported: unpickling a crafted file must not run its code.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes"),
}


class _CifarUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only ``_PICKLE_GLOBALS``: dicts, lists, strings, numbers
    and bytes need none, so an official file loads and a crafted one stops at its first import."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise UserError(f"{path} is missing: restore the full dataset folder or point data.root elsewhere") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a CIFAR batch file: remove it and download the dataset again") from None
    except _RefusedGlobal as e:
        raise UserError(
            f"{path} is not a CIFAR data file: its pickle imports {e}, which the official files never do "
            "(it could run code); delete it and download the dataset again"
        ) from None
    except Exception as e:  # truncated pickles raise EOFError, garbage raises UnpicklingError etc.
        raise UserError(
            f"{path} is truncated or corrupt ({type(e).__name__}): delete the dataset folder and download it again"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a CIFAR python-format file: delete it and download the dataset again")
    return obj


def _read_cifar_batches(folder: Path, files: list[str], label_key: str, classes: list[str]) -> ImageSet:
    images, labels = [], []
    for name in files:
        path = folder / name
        batch = _unpickle(path)
        data, lab = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or lab is None or len(lab) != len(data):
            raise UserError(f"{path} does not hold CIFAR data (N×3072 uint8 + labels): delete it and download the dataset again")
        if data.dtype != np.uint8:  # float pixels would be wrapped or truncated into 0..255, not read
            raise UserError(f"{path} holds {data.dtype} pixels, not the official uint8 (0..255): "
                            "convert them to uint8, or delete the file and download the dataset again")
        if len(data) == 0:
            raise UserError(f"{path} holds no images: delete it and download the dataset again")
        lab = np.asarray(lab)
        if lab.dtype.kind not in "iu":
            raise UserError(f"{path} has {lab.dtype} labels, not class numbers 0..{len(classes) - 1}: "
                            "the file is corrupt, download the dataset again")
        images.append(torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32))
        labels.append(torch.as_tensor(lab, dtype=torch.int64))
    out = ImageSet(torch.cat(images), torch.cat(labels), classes)
    if int(out.labels.min()) < 0 or int(out.labels.max()) >= len(classes):
        raise UserError(f"{folder} has labels outside 0..{len(classes) - 1}: the files are corrupt, download them again")
    return out


def _locate_cifar(root: Path, name: str, download: bool) -> Path:
    """Find the extracted folder: ROOT itself, ROOT/<folder>, or an archive to extract."""
    spec = _CIFAR[name]
    if root.is_file() and root.name.endswith(".tar.gz"):
        archive, root = root, root.parent
    else:
        archive = root / spec["archive"]
    for candidate in (root, root / spec["folder"]):
        if (candidate / spec["meta"][0]).exists() or (candidate / spec["train"][0]).exists():
            return candidate
    if archive.is_file():
        log.info("extracting %s", archive)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(root, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"{archive} is truncated or corrupt ({type(e).__name__}): delete it and download it again") from None
        return root / spec["folder"]
    if not download:
        raise UserError(
            f"no {name} data under {root}: put {spec['folder']}/ or {spec['archive']} there, "
            "set data.root=PATH to where it is, or allow data.download=true"
        )
    return _download_cifar(root, name)


def _download_cifar(root: Path, name: str) -> Path:
    """Download through torchvision, which checks the official md5 of the archive it fetches."""
    import torchvision.datasets as tvd

    spec = _CIFAR[name]
    log.info("downloading %s into %s", name, root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        getattr(tvd, spec["torchvision"])(str(root), train=True, download=True)
    except Exception as e:
        raise UserError(
            f"no {name} data under {root} and the download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}): "
            f"put {spec['folder']}/ or {spec['archive']} there, or set data.root=PATH to where it is"
        ) from None
    return root / spec["folder"]


def load_cifar(name: str, root: str | Path, download: bool = True) -> tuple[ImageSet, ImageSet]:
    spec = _CIFAR[name]
    folder = _locate_cifar(Path(root).expanduser(), name, download)
    meta_file, meta_key = spec["meta"]
    meta = _unpickle(folder / meta_file)
    if meta_key not in meta:
        raise UserError(f"{folder / meta_file} has no '{meta_key}': it is not {name} metadata, download the dataset again")
    classes = [str(c) for c in meta[meta_key]]
    train = _read_cifar_batches(folder, spec["train"], spec["label_key"], classes)
    test = _read_cifar_batches(folder, spec["test"], spec["label_key"], classes)
    return train, test


# --------------------------------------------------------------------------- image folders

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _decode_folder(root: Path, image_size: int, allow_empty_classes: bool = False) -> ImageSet:
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist: set data.root to a folder with one subfolder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir()) if f.suffix.lower() in _IMAGE_SUFFIXES]
    if not files:
        raise UserError(f"image folder {root} has no images: it needs one subfolder per class holding .png/.jpg files")
    if len(classes) < 2:
        raise UserError(f"image folder {root} has only the class folder '{classes[0]}': a classifier needs at least 2 class folders, one per class")
    empty = [c for i, c in enumerate(classes) if not any(label == i for _, label in files)]
    if empty and not allow_empty_classes:  # a class no image teaches would still be predicted as an option and counted in macro metrics
        raise UserError(f"class folder {root / empty[0]} has no images: add some, or remove the folder")
    images = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for k, (path, _) in enumerate(files):
        images[k] = read_image(path, (image_size, image_size))
    labels = torch.tensor([i for _, i in files], dtype=torch.int64)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, classes)


def read_image(path: Path, size: tuple[int, int] | None = None, fix: str = "remove or replace it") -> np.ndarray:
    """One image file as uint8 (H, W, 3) RGB, resized (bilinear) to ``size`` = (H, W) when given.

    Pixels keep their real range: 16-bit greys are scaled to 8 bits (v -> round(v / 257)) rather
    than clipped to white; 16-bit colour PNGs come through PIL's 8-bit reading (the high byte);
    32-bit integer and floating-point images (mode I, F: TIFFs) have no known range and are refused.
    Anything unreadable, a decompression bomb included, is a ``UserError`` naming the file, ending
    in ``fix`` (cifar-predict reads its inputs here too)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16"):
                wide = np.asarray(im).astype(np.uint32)  # I;16, I;16B, I;16L: 0..65535
                grey = ((2 * wide + 257) // 514).astype(np.uint8)  # round(v / 257), no ties (257 is odd)
                im = Image.fromarray(grey, mode="L").convert("RGB")
            elif im.mode in ("I", "F"):
                raise UserError(f"cannot read image {path}: it holds 32-bit {'integer' if im.mode == 'I' else 'floating-point'} "
                                f"pixels (mode {im.mode}) whose range is unknown; save it as an 8- or 16-bit PNG, or {fix}")
            else:
                im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(im)
    except UserError:
        raise
    except Image.DecompressionBombError:
        raise UserError(f"cannot read image {path}: it is larger than PIL's decompression-bomb limit "
                        f"({Image.MAX_IMAGE_PIXELS * 2:,} pixels); shrink it, or {fix}") from None
    except MemoryError:
        raise UserError(f"cannot read image {path}: it does not fit in memory; shrink it, or {fix}") from None
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError... on bad files
        raise UserError(f"cannot read image {path} ({type(e).__name__}): {fix}") from None


# Bumped when decoding changes (2: 16-bit greys scaled, not clipped), so no cache of an older reading is reused.
_DECODER_VERSION = 2


def _folder_fingerprint(root: Path, image_size: int) -> str:
    h = hashlib.sha1(f"{root.resolve()}|{image_size}|{_DECODER_VERSION}".encode())
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_image_folder(root: Path, image_size: int, cache_dir: Path | None, allow_empty_classes: bool = False) -> ImageSet:
    """Decode a class-per-subfolder tree once; later runs load the cached tensors. An empty class
    folder is refused unless ``allow_empty_classes`` (a ROOT/test split may lack a class)."""
    cache = None
    if cache_dir is not None and root.is_dir():
        cache = Path(cache_dir).expanduser() / f"folder-{_folder_fingerprint(root, image_size)}.pt"
        if cache.exists():
            try:
                blob = torch.load(cache, weights_only=True)
                return ImageSet(blob["images"], blob["labels"], list(blob["classes"]))
            except Exception:
                log.warning("ignoring unreadable cache %s", cache)
    data = _decode_folder(root, image_size, allow_empty_classes)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            torch.save({"images": data.images, "labels": data.labels, "classes": data.classes}, tmp)
            tmp.replace(cache)
        except OSError as e:
            log.warning("could not write cache %s (%s); decoding again next time", cache, e)
    return data


def load_folder_splits(root: str | Path, image_size: int, test_fraction: float, seed: int, cache_dir) -> tuple[ImageSet, ImageSet]:
    """ROOT/train + ROOT/test when both exist, else ROOT split with a seeded hold-out."""
    root = Path(root).expanduser()
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = load_image_folder(root / "train", image_size, cache_dir)
        test = load_image_folder(root / "test", image_size, cache_dir, allow_empty_classes=True)
        if test.classes != train.classes:
            raise UserError(f"{root}/train and {root}/test have different class folders: make them match")
        return train, test
    data = load_image_folder(root, image_size, cache_dir)
    if test_fraction == 0:
        raise UserError("data.test_fraction is 0 and the folder has no train/ and test/ subfolders: set it above 0")
    train, test = split_train_val(data, test_fraction, seed)
    if test is None:
        raise UserError(f"image folder {root} has only {len(data)} images: data.test_fraction={test_fraction} of them rounds to "
                        f"no test image; add images (at least {math.floor(0.5 / test_fraction) + 1}), or give ROOT/train and ROOT/test folders")
    return train, test


# --------------------------------------------------------------------------- synthetic

def make_synthetic(num_classes: int = 10, train_size: int = 2000, test_size: int = 500, image_size: int = 32, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Images with learnable class structure: a smooth per-class colour pattern plus noise and jitter.

    A small CNN separates the classes within an epoch or two, so smoke runs and tests can check that
    learning happens without any download.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g)
    prototypes = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bicubic", align_corners=False)

    def draw(n: int) -> ImageSet:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=g)]
        brightness = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=g)
        noise = 0.15 * torch.randn(n, 3, image_size, image_size, generator=g)
        x = (prototypes[labels] * brightness + noise).clamp(0, 1)
        return ImageSet((x * 255).round().to(torch.uint8), labels, [f"class_{i}" for i in range(num_classes)])

    return draw(train_size), draw(test_size)


# --------------------------------------------------------------------------- dispatch

SOURCES: dict[str, Callable[..., tuple[ImageSet, ImageSet]]] = {
    "cifar10": lambda cfg: load_cifar("cifar10", cfg["root"], cfg.get("download", True)),
    "cifar100": lambda cfg: load_cifar("cifar100", cfg["root"], cfg.get("download", True)),
    "folder": lambda cfg: load_folder_splits(
        cfg["root"], cfg.get("image_size", 32), cfg.get("test_fraction", 0.1), cfg.get("split_seed", 0), cfg.get("cache_dir")
    ),
    "synthetic": lambda cfg: make_synthetic(
        cfg.get("num_classes", 10), cfg.get("train_size", 2000), cfg.get("test_size", 500), cfg.get("image_size", 32), cfg.get("seed", 0)
    ),
}


def load_source(cfg) -> tuple[ImageSet, ImageSet]:
    """(train, test) for a data config such as ``conf/data/cifar10.yaml``; CIFAR's 32 px images are
    resized once here when ``image_size`` asks for another size (folders and synthetic make theirs)."""
    name = cfg["name"]
    if name not in SOURCES:
        raise UserError(f"unknown data source '{name}': choose one of {', '.join(sorted(SOURCES))}")
    train, test = SOURCES[name](cfg)
    size = cfg.get("image_size")
    if name in _CIFAR and size and int(size) != train.images.shape[-1]:
        train, test = resize_images(train, int(size)), resize_images(test, int(size))
    return train, test


def resize_images(data: ImageSet, size: int, chunk: int = 1024) -> ImageSet:
    """Bilinear (antialiased) resize of a whole split, in chunks so only one chunk is ever float."""
    if size < 1:
        raise UserError(f"data.image_size={size} is invalid: it must be a positive number of pixels")
    out = torch.empty((len(data), 3, size, size), dtype=torch.uint8)
    for i in range(0, len(data), chunk):
        x = data.images[i:i + chunk].float()
        y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i:i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return ImageSet(out, data.labels, data.classes)
