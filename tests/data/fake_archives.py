"""Small files in the real formats of the downloadable datasets (cnnlab.data.catalog): a CIFAR-10 binary
archive, Kaggle's dogs-vs-cats zip, Oxford-IIIT Pet's two archives, Imagenette's archive."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from dataclasses import replace

import numpy as np
from PIL import Image

from cnnlab.data import catalog


def jpeg(seed: int, size=(40, 30), bright: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 128, size=(size[1], size[0], 3), dtype=np.uint8) + (120 if bright else 0)
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def cifar10_archive(per_file: int = 20) -> bytes:
    """cifar-10-batches-bin/ with 5 training batches and a test batch of ``per_file`` records each; the label of
    a record is its index modulo 10 and its red channel is bright for labels >= 5 (learnable)."""
    members = {}
    rng = np.random.default_rng(0)
    for k, name in enumerate([f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]):
        labels = (np.arange(per_file) + k) % 10
        images = rng.integers(0, 100, size=(per_file, 3, 32, 32), dtype=np.uint8)
        images[labels >= 5, 0] += 150
        rec = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(per_file, -1)], axis=1)
        members[f"cifar-10-batches-bin/{name}"] = rec.tobytes()
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(catalog.CIFAR10_CLASSES) + "\n\n").encode()
    members["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    return tar_gz(members)


def kaggle_train_zip(per_class: int = 12) -> bytes:
    """Kaggle's train.zip: train/cat.N.jpg and train/dog.N.jpg in one folder (dogs bright)."""
    members = {f"train/{c}.{i}.jpg": jpeg(i + 100 * (c == "dog"), bright=c == "dog")
               for c in ("cat", "dog") for i in range(per_class)}
    return zip_bytes(members)


def kaggle_competition_zip(per_class: int = 12) -> bytes:
    """The competition's dogs-vs-cats.zip: train.zip, test1.zip (unlabelled) and sampleSubmission.csv."""
    return zip_bytes({"train.zip": kaggle_train_zip(per_class),
                      "test1.zip": zip_bytes({"test1/1.jpg": jpeg(999)}), "sampleSubmission.csv": b"id,label\n"})


def oxford_pets_archives(per_class: int = 8) -> tuple[bytes, bytes]:
    """images.tar.gz (images/Breed_N.jpg) and annotations.tar.gz (annotations/trainval.txt, test.txt)."""
    images, lists = {}, {"trainval.txt": ["#Image CLASS-ID SPECIES BREED ID"], "test.txt": []}
    for i in range(2 * per_class):
        for species, breed in ((1, "Abyssinian"), (2, "boxer")):
            name = f"{breed}_{i}"
            images[f"images/{name}.jpg"] = jpeg(i + 50 * species, bright=species == 2)
            lists["trainval.txt" if i < per_class else "test.txt"].append(f"{name} {species} {species} 1")
    annotations = {f"annotations/{k}": ("\n".join(v) + "\n").encode() for k, v in lists.items()}
    annotations["annotations/trimaps/x.png"] = b"not used"
    return tar_gz(images), tar_gz(annotations)


def imagenette_archive(per_class: int = 4) -> bytes:
    members = {}
    for k, wnid in enumerate(catalog.IMAGENETTE_CLASSES):
        for split, n in (("train", per_class), ("val", 2)):
            for i in range(n):
                members[f"imagenette2-320/{split}/{wnid}/{wnid}_{i}.JPEG"] = jpeg(1000 * k + i, bright=k % 2 == 1)
    members["imagenette2-320/noisy_imagenette.csv"] = b"path,label\n"
    return tar_gz(members)


def serve_catalog(server, monkeypatch, *, wrong: str | None = None) -> dict[str, bytes]:
    """Put every dataset's files on ``server`` under their real names and point the catalog's md5s at them (``wrong``:
    a file name whose md5 is left wrong). Returns name -> bytes."""
    pets_images, pets_annotations = oxford_pets_archives()
    files = {"cifar-10-binary.tar.gz": cifar10_archive(), "train.zip": kaggle_train_zip(),
             "images.tar.gz": pets_images, "annotations.tar.gz": pets_annotations,
             "imagenette2-320.tgz": imagenette_archive()}
    server.files.update(files)
    patched = {}
    for name, entry in catalog.CATALOG.items():
        remotes = tuple(replace(r, md5=(None if r.md5 is None else "0" * 32 if r.name == wrong else
                                        hashlib.md5(files[r.name]).hexdigest())) for r in entry.files)
        patched[name] = replace(entry, files=remotes)
    monkeypatch.setattr(catalog, "CATALOG", patched)
    monkeypatch.setenv("CNNLAB_MIRROR", server.base)
    return files
