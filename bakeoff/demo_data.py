"""Demo data: real Fashion-MNIST images written as a messy, Animals-10-like raw dump.

The machine is offline, so the source is Debian's ``dataset-fashion-mnist`` package (IDX files under
/usr/share/datasets/fashion-mnist/). The dump imitates what ingest meets in the wild: class folders with
Italian names and a ``translate.json`` label map to English, JPEG and PNG mixed, grey and RGB, some
upscaled, plus deliberate trouble (zero-byte file, truncated JPEG, text named .jpg, .DS_Store, an image at
the top level, one exact duplicate, one resized + re-encoded near-duplicate). Same seed, same files.

Every file written is listed in ``DIR/.bakeoff-demo-data-written.jsonl`` (``bakeoff.write_record``): a re-run
replaces and prunes only those, so images the user added to the dump, and a folder demo-data did not make,
are never touched.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bakeoff import storage, write_record
from bakeoff.errors import BakeoffError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGES_FILE = "train-images-idx3-ubyte.gz"
LABELS_FILE = "train-labels-idx1-ubyte.gz"
INSTALL_HINT = "install it with `apt-get install -y dataset-fashion-mnist` (or `make apt-runtime`)"

# Fashion-MNIST label index -> (folder name in the raw dump, English class name after the label map)
CLASSES: list[tuple[str, str]] = [
    ("maglietta", "tshirt"),
    ("pantaloni", "trouser"),
    ("pullover", "pullover"),
    ("vestito", "dress"),
    ("cappotto", "coat"),
    ("sandalo", "sandal"),
    ("camicia", "shirt"),
    ("scarpa", "sneaker"),
    ("borsa", "bag"),
    ("stivaletto", "ankle_boot"),
]
RAW_DIR = "raw-img"
LABEL_MAP_NAME = "translate.json"


@dataclass
class DemoResult:
    """Where the dump is and what it holds."""

    raw_dir: str
    label_map: str
    n_images: int
    classes: list[str]
    broken: list[str]


def _read_idx(path: Path, offset: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as handle:
            return np.frombuffer(handle.read(), dtype=np.uint8, offset=offset)
    except (OSError, EOFError) as exc:
        raise BakeoffError(f"cannot read Fashion-MNIST file {path}: {exc}; reinstall dataset-fashion-mnist") from exc


def load_fashion_mnist(data_dir: str | Path | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The images (uint8 [n, 28, 28]) and labels of one split from the Debian IDX files: ``train`` (60k) or
    ``test`` (10k, the ``t10k`` files)."""
    data_dir = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    prefix = {"train": "train", "test": "t10k"}[split]
    images_path = data_dir / IMAGES_FILE.replace("train", prefix, 1)
    labels_path = data_dir / LABELS_FILE.replace("train", prefix, 1)
    if not images_path.exists() or not labels_path.exists():
        raise BakeoffError(f"Fashion-MNIST not found in {data_dir}: {INSTALL_HINT}")
    pixels = _read_idx(images_path, 16)
    labels = _read_idx(labels_path, 8)
    if pixels.size != labels.size * 28 * 28:
        raise BakeoffError(f"Fashion-MNIST files in {data_dir} do not match; reinstall dataset-fashion-mnist")
    return pixels.reshape(-1, 28, 28), labels


def resolve_classes(classes: list[str] | str | None, table: list[tuple[str, str]] = CLASSES) -> list[int]:
    """Indices into ``table`` ((raw folder, English) pairs) of the classes asked for by either name; all if None."""
    if classes is None:
        return list(range(len(table)))
    if isinstance(classes, str):
        classes = [c for c in classes.split(",") if c.strip()]
    lookup = {name: i for i, pair in enumerate(table) for name in pair}
    unknown = [c for c in classes if c.strip() not in lookup]
    if unknown:
        names = ", ".join(f"{raw}/{en}" for raw, en in table)
        raise BakeoffError(f"unknown demo classes {unknown}; choose from {names}")
    picked = sorted({lookup[c.strip()] for c in classes})
    if len(picked) < 2:
        raise BakeoffError("--classes must name at least 2 demo classes")
    return picked


def encode_image(img, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _variant(pixels: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """One garment as the web would serve it: grey or tinted RGB, native or upscaled, JPEG or PNG."""
    from PIL import Image

    img = Image.fromarray(pixels, "L")
    if rng.random() < 0.5:
        tint = rng.uniform(0.6, 1.0, size=3)
        rgb = np.clip(pixels[..., None].astype(np.float32) * tint + (1 - tint) * 40, 0, 255).astype(np.uint8)
        img = Image.fromarray(rgb, "RGB")
    if rng.random() < 0.3:
        side = int(rng.choice([56, 64, 96]))
        img = img.resize((side, side), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        return encode_image(img, "JPEG", quality=int(rng.integers(85, 96))), "jpeg"
    return encode_image(img, "PNG"), "png"


def make_demo_data(
    out_dir: str,
    *,
    per_class: int = 200,
    classes: list[str] | str | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
) -> DemoResult:
    """Write ``out_dir/raw-img/<italian class>/<file>`` and ``out_dir/translate.json``; see the module doc."""
    from PIL import Image

    if per_class < 3:
        raise BakeoffError(f"--per-class must be at least 3 (one image each for train/val/test), got {per_class}")
    picked = resolve_classes(classes)
    pixels, labels = load_fashion_mnist(data_dir)
    class_a, class_b = CLASSES[picked[0]][0], CLASSES[picked[1]][0]  # the planted trouble goes in these two
    planted = {
        "vuoto": f"{RAW_DIR}/{class_a}/vuoto.jpg",
        "troncato": f"{RAW_DIR}/{class_a}/troncato.jpeg",
        "leggimi": f"{RAW_DIR}/{class_b}/leggimi.jpg",
        "ds_store": f"{RAW_DIR}/.DS_Store",
        "ds_store_b": f"{RAW_DIR}/{class_b}/.DS_Store",
        "senza_cartella": f"{RAW_DIR}/senza_cartella.png",
        "quasi_uguale": f"{RAW_DIR}/{class_a}/quasi_uguale.jpg",
    }
    out = Path(out_dir)
    record = write_record.WriteRecord(out, "demo-data")
    # a dump demo-data did not make (e.g. a real Animals-10 download) is the user's data: never written over
    mine = [LABEL_MAP_NAME, *planted.values()] if record.exists else [RAW_DIR, LABEL_MAP_NAME]
    record.refuse_foreign(mine, "choose an empty --out folder")
    rng = np.random.default_rng(seed)
    written: set[str] = set()

    def write(rel: str, data: bytes) -> None:
        record.write_bytes(rel, data)
        written.add(rel)

    first_files: dict[str, tuple[str, np.ndarray]] = {}
    with record.open():
        for index in picked:
            folder = CLASSES[index][0]
            available = np.flatnonzero(labels == index)
            if per_class > available.size:
                raise BakeoffError(f"--per-class {per_class} is more than the {available.size} images of {folder}")
            chosen = np.sort(rng.choice(available, size=per_class, replace=False))
            for row in chosen:
                data, ext = _variant(pixels[row], rng)
                rel = f"{RAW_DIR}/{folder}/{rng.bytes(8).hex()}.{ext}"
                write(rel, data)
                first_files.setdefault(folder, (rel, pixels[row]))
        n_images = len(written)

        # Deliberate trouble, in the first two picked classes.
        rel_a, pixels_a = first_files[class_a]
        pixels_b = first_files[class_b][1]
        broken = {
            planted["vuoto"]: b"",
            planted["troncato"]: encode_image(Image.fromarray(pixels_a, "L").resize((64, 64)), "JPEG")[:400],
            planted["leggimi"]: b"This is not an image, it is a note someone saved with the wrong name.\n",
            planted["ds_store"]: b"\x00\x00\x00\x01Bud1" + bytes(64),
            planted["ds_store_b"]: b"\x00\x00\x00\x01Bud1" + bytes(64),
            planted["senza_cartella"]: encode_image(Image.fromarray(pixels_b, "L"), "PNG"),
        }
        for rel, data in broken.items():
            write(rel, data)
        # an exact copy under another name, and a resized JPEG-60 re-encode of the same garment
        write(f"{RAW_DIR}/{class_a}/copia_{rel_a.rsplit('/', 1)[1]}", (out / rel_a).read_bytes())
        near = Image.fromarray(pixels_a, "L").convert("RGB").resize((56, 56), Image.Resampling.BICUBIC)
        write(planted["quasi_uguale"], encode_image(near, "JPEG", quality=60))

        label_map = {CLASSES[i][0]: CLASSES[i][1] for i in picked}
        record.add(LABEL_MAP_NAME)
        storage.write_json(out / LABEL_MAP_NAME, label_map)
        written.add(LABEL_MAP_NAME)
    record.prune(written)  # an earlier run's files this run did not write again (e.g. a larger --per-class)
    return DemoResult(
        raw_dir=str(out / RAW_DIR),
        label_map=str(out / LABEL_MAP_NAME),
        n_images=n_images,
        classes=[CLASSES[i][0] for i in picked],
        broken=sorted(broken),
    )
