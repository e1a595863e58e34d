"""Training from several sources: local folders and Hub dataset repos (from a pre-filled HF cache, offline),
merged by class name, with the exact sources and commits written into the run folder and the model card."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnn import sources
from cnn.config import TrainConfig, make_config
from cnn.data import DataError, scan_folder
from imagegen import io_bytes, make_shapes_folder, shape_image
from test_hub import COMMIT_1, COMMIT_2, add_to_hf_cache, hf_home, offline_cache, read_front_matter  # noqa: F401
from train.__main__ import main as train_main


@pytest.mark.parametrize("spec, expected", [
    ("hf://datasets/you/animal-feedback", ("you/animal-feedback", None, "", None)),
    ("hf://datasets/you/animal-feedback@v2", ("you/animal-feedback", "v2", "", None)),
    ("hf://datasets/you/animal-feedback@" + COMMIT_1 + "/photos/2025/",
     ("you/animal-feedback", COMMIT_1, "photos/2025", None)),
    ("hf://datasets/you/animal-feedback/photos", ("you/animal-feedback", None, "photos", None)),
    # revisions with '/': the Hub's special refs as they are, any other URL-encoded (huggingface_hub's HF URIs)
    ("hf://datasets/you/shapes@refs/convert/parquet", ("you/shapes", "refs/convert/parquet", "", None)),
    ("hf://datasets/you/shapes@refs%2Fconvert%2Fparquet/default?split=test",
     ("you/shapes", "refs/convert/parquet", "default", "test")),
    ("hf://datasets/you/shapes@refs/pr/3/data", ("you/shapes", "refs/pr/3", "data", None)),
    ("hf://datasets/you/shapes@my%2Fbranch?split=validation", ("you/shapes", "my/branch", "", "validation")),
])
def test_parse_hub_spec(spec, expected):
    assert sources.parse_hub_spec(spec) == expected


@pytest.mark.parametrize("spec", ["hf://datasets/", "hf://datasets/you", "hf://datasets//name",
                                  "hf://datasets/you/shapes?subset=x", "hf://datasets/you/shapes?split=a/b"])
def test_a_malformed_hub_spec_is_refused(spec):
    with pytest.raises(DataError, match="hf://datasets/user/name"):
        sources.parse_hub_spec(spec)


def test_only_images_are_fetched_in_any_case_under_the_subfolder():
    from huggingface_hub.utils import filter_repo_objects

    files = ["cat/a.jpg", "cat/b.JPG", "dog/deep/c.Png", "none/d.webp", "corrections.jsonl", "README.md",
             ".gitattributes", "cat/e.jpg.txt"]
    assert list(filter_repo_objects(files, allow_patterns=sources.image_patterns())) == files[:4]
    nested = ["photos/cat/a.jpeg", "other/cat/a.jpg", "photos/log.jsonl"]
    assert list(filter_repo_objects(nested, allow_patterns=sources.image_patterns("photos"))) == nested[:1]


def test_a_single_data_folder_still_reads_as_one_source():
    """train_config.json files written before --data could repeat hold one string."""
    assert TrainConfig.from_dict({"data": "raw-img"}).data == ["raw-img"]
    assert TrainConfig.from_dict({"data": ""}).data == []
    assert make_config(data=Path("a")).data == ["a"]
    assert make_config(data=["a", "hf://datasets/u/n"]).data == ["a", "hf://datasets/u/n"]


# --- a Hub dataset in the local HF cache -----------------------------------------------------------------

def dataset_files(kinds: dict[str, int], seed: int = 0) -> dict[str, bytes]:
    """A dataset repo as page.feedback writes it: <label>/<name>.jpg, none/, and the corrections log."""
    files = {f"{kind}/{seed}{i:02d}.jpg": io_bytes(shape_image(kind if kind != "none" else "square", 40, 900 + seed * 50 + i),
                                                   "JPEG")
             for kind, n in kinds.items() for i in range(n)}
    return {**files, "corrections.jsonl": b'{"label": "circle"}\n', "README.md": b"# corrections\n"}


@pytest.fixture
def feedback_repo(offline_cache) -> str:
    add_to_hf_cache(offline_cache, "you/animal-feedback", dataset_files({"circle": 2}, seed=1), COMMIT_1, ref=None,
                    repo_type="dataset")
    add_to_hf_cache(offline_cache, "you/animal-feedback", dataset_files({"circle": 3, "triangle": 3, "none": 2}),
                    COMMIT_2, repo_type="dataset")
    return "hf://datasets/you/animal-feedback"


def test_a_hub_dataset_resolves_to_its_cached_snapshot(feedback_repo, offline_cache):
    latest = sources.resolve(feedback_repo)
    assert (latest.repo_id, latest.revision, latest.commit) == ("you/animal-feedback", None, COMMIT_2)
    assert latest.folder == offline_cache / "datasets--you--animal-feedback" / "snapshots" / COMMIT_2
    assert sorted(p.name for p in latest.folder.iterdir()) == ["README.md", "circle", "corrections.jsonl", "none",
                                                               "triangle"]
    pinned = sources.resolve(f"{feedback_repo}@{COMMIT_1}")
    assert (pinned.revision, pinned.commit) == (COMMIT_1, COMMIT_1)
    # a resumed run reads the commit it recorded, even though main has moved on
    (again,) = sources.resolve_all([feedback_repo], pinned=[{"spec": feedback_repo, "commit": COMMIT_1}])
    assert again.commit == COMMIT_1 and again.revision is None


def test_a_hub_dataset_that_cannot_be_fetched(offline_cache, feedback_repo):
    with pytest.raises(DataError, match="not in the local cache"):
        sources.resolve("hf://datasets/you/missing")
    with pytest.raises(DataError, match="not in the local cache"):
        sources.resolve(f"{feedback_repo}@{'3' * 40}")
    with pytest.raises(DataError, match="neither class folders of images under 'photos' nor Parquet files"):
        sources.resolve(f"{feedback_repo}/photos")
    with pytest.raises(DataError, match="no training data"):
        sources.resolve_all([])


def test_training_on_two_folders_and_a_hub_dataset(feedback_repo, tmp_path, caplog):
    first = make_shapes_folder(tmp_path / "first", per_class=10, size=40, classes=("circle", "square"))
    second = make_shapes_folder(tmp_path / "second", per_class=10, size=40, classes=("triangle",))
    run = tmp_path / "run"
    args = ["--data", str(first), "--data", str(second), "--data", feedback_repo, "--epochs", "1",
            "--image-size", "32", "--batch-size", "16", "--device", "cpu", "--workers", "1",
            "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run)]
    with caplog.at_level("INFO"):
        assert train_main(args) == 0

    record = json.loads((run / "sources.json").read_text())["sources"]
    assert [(r["spec"], r["type"], r["photos"], r["outliers"]) for r in record] == [
        (str(first), "folder", 20, 0), (str(second), "folder", 10, 0), (feedback_repo, "hub_dataset", 6, 2)]
    assert record[0]["path"] == str(first.resolve())
    assert (record[2]["repo_id"], record[2]["commit"], record[2]["revision"]) == ("you/animal-feedback", COMMIT_2, None)
    assert f"data: Hub dataset you/animal-feedback @ {COMMIT_2}, 6 photos (+2 in none/, not a class)" in caplog.text

    config = json.loads((run / "model" / "config.json").read_text())
    assert config["label_names"] == ["circle", "square", "triangle"]        # none/ is not a class
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) + len(split["val"]) == 36
    assert sum(p.startswith("2:circle/") for p in split["train"] + split["val"]) == 3
    assert json.loads((run / "train_config.json").read_text())["data"] == [str(first), str(second), feedback_repo]

    meta, body = read_front_matter((run / "model" / "README.md").read_text())
    assert "you/animal-feedback" in meta["datasets"]
    assert f"| [you/animal-feedback](https://huggingface.co/datasets/you/animal-feedback) | {COMMIT_2} | 6 |" in body
    assert f"| `{first.name}` | (local folder) | 20 |" in body and f"| `{second.name}` | (local folder) | 10 |" in body
    assert str(first.parent) not in body                                   # folders by name, never a server path


def test_training_stops_with_one_line_when_a_hub_dataset_is_missing(offline_cache, tmp_path, caplog):
    first = make_shapes_folder(tmp_path / "first", per_class=2, size=32, classes=("circle", "square"))
    run = tmp_path / "run"
    assert train_main(["--data", str(first), "--data", "hf://datasets/you/missing", "--run-dir", str(run)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["cannot reach the Hub for 'hf://datasets/you/missing' and it is not in the local cache "
                      "(offline, or HF_HUB_OFFLINE=1)"]
    assert not (run / "checkpoints").exists()


# --- a Parquet dataset in the local HF cache ----------------------------------------------------------------

PARQUET_LABELS = ["triangle", "circle", "square"]     # the ClassLabel's order, not sorted


def parquet_bytes(rows: list[tuple[str, int]], seed: int = 0) -> bytes:
    """A Parquet file as `datasets` writes it (push_to_hub, the Hub's conversion): an Image column of bytes and a
    ClassLabel column, their features in the schema's 'huggingface' metadata. Row = (shape, label index)."""
    import io

    import datasets

    images = [{"bytes": io_bytes(shape_image(kind, 40, seed + i), "PNG"), "path": f"{kind}{i}.png"}
              for i, (kind, _) in enumerate(rows)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=PARQUET_LABELS)})
    table = datasets.Dataset.from_dict({"image": images, "label": [label for _, label in rows]}, features=features)
    out = io.BytesIO()
    table.to_parquet(out)
    return out.getvalue()


def shape_rows(n: int) -> list[tuple[str, int]]:
    return [(kind, PARQUET_LABELS.index(kind)) for kind in ("circle", "square", "triangle") for _ in range(n)]


@pytest.fixture
def parquet_repo(offline_cache) -> str:
    """you/shapes: main as push_to_hub writes it (data/<split>-*.parquet), and its refs/convert/parquet branch
    (default/<split>/0000.parquet) at another commit."""
    pytest.importorskip("datasets")
    add_to_hf_cache(offline_cache, "you/shapes", {
        "data/train-00000-of-00002.parquet": parquet_bytes(shape_rows(2)),
        "data/train-00001-of-00002.parquet": parquet_bytes(shape_rows(1), seed=10),
        "data/test-00000-of-00001.parquet": parquet_bytes([("circle", 1), ("square", 2)], seed=20),
        "README.md": b"---\nlicense: mit\n---\n"}, COMMIT_1, repo_type="dataset")
    add_to_hf_cache(offline_cache, "you/shapes", {
        "default/train/0000.parquet": parquet_bytes(shape_rows(2) + [("circle", None)]),   # one row without a label
        "default/test/0000.parquet": parquet_bytes([("square", 2), ("triangle", 0)], seed=20)}, COMMIT_2,
        ref="refs/convert/parquet", repo_type="dataset")
    return "hf://datasets/you/shapes"


def tree(folder: Path) -> dict[str, int]:
    return {d.name: len(list(d.iterdir())) for d in sorted(folder.iterdir())}


def test_a_parquet_dataset_becomes_a_folder_per_class_in_the_cache(parquet_repo, tmp_path):
    from PIL import Image

    train = sources.resolve(parquet_repo, cache_dir=tmp_path / "cache")
    assert (train.repo_id, train.revision, train.commit, train.split) == ("you/shapes", None, COMMIT_1, "train")
    assert train.folder.is_relative_to(tmp_path / "cache" / sources.DATASETS_FOLDER)
    assert tree(train.folder) == {"circle": 3, "square": 3, "triangle": 3}      # two files of the train split
    first = sorted((train.folder / "circle").iterdir())[0]
    assert first.suffix == ".png"
    assert Image.open(first).tobytes() == shape_image("circle", 40, 0).tobytes()   # the very photo, its label

    test = sources.resolve(f"{parquet_repo}?split=test", cache_dir=tmp_path / "cache")
    assert tree(test.folder) == {"circle": 1, "square": 1} and test.split == "test"
    # circle is label 1: the row ("circle", 1) is a circle only if names come from the ClassLabel, in its order
    assert Image.open(next((test.folder / "circle").iterdir())).tobytes() == shape_image("circle", 40, 20).tobytes()

    for spec in (f"{parquet_repo}@refs/convert/parquet", f"{parquet_repo}@refs%2Fconvert%2Fparquet/default"):
        converted = sources.resolve(spec, cache_dir=tmp_path / "cache")
        assert (converted.revision, converted.commit) == ("refs/convert/parquet", COMMIT_2)
        assert tree(converted.folder) == {"circle": 2, "square": 2, "triangle": 2}   # the unlabelled row skipped
    again = sources.resolve(parquet_repo, cache_dir=tmp_path / "cache")         # written once per commit
    assert again.folder == train.folder and first.stat().st_mtime_ns == sorted((again.folder / "circle").iterdir())[0].stat().st_mtime_ns


def test_a_parquet_dataset_that_cannot_be_read(parquet_repo, offline_cache, tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(DataError, match="has no Parquet files of split 'validation'"):
        sources.resolve(f"{parquet_repo}?split=validation", cache_dir=tmp_path)
    plain = io.BytesIO()
    pq.write_table(pa.table({"image": [b"x"], "label": [0]}), plain)      # no 'huggingface' metadata: label numbers
    add_to_hf_cache(offline_cache, "you/plain", {"data/train-0.parquet": plain.getvalue()}, COMMIT_1,
                    repo_type="dataset")
    with pytest.raises(DataError, match=r"needs an Image column and a label column \(a ClassLabel, or strings named "
                                        r"'label'\) .* its columns: image, label"):
        sources.resolve("hf://datasets/you/plain", cache_dir=tmp_path)
    with pytest.raises(DataError, match="neither split folders .* nor Parquet files"):   # ?split= needs splits
        add_to_hf_cache(offline_cache, "you/photos", dataset_files({"circle": 1}), COMMIT_1, repo_type="dataset")
        sources.resolve("hf://datasets/you/photos?split=train", cache_dir=tmp_path)


def test_training_on_a_parquet_dataset_records_it(parquet_repo, tmp_path):
    run = tmp_path / "run"
    spec = f"{parquet_repo}@refs%2Fconvert%2Fparquet"
    args = ["--data", spec, "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--device", "cpu",
            "--workers", "1", "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run)]
    assert train_main(args) == 0
    (row,) = json.loads((run / "sources.json").read_text())["sources"]
    assert {k: row[k] for k in ("spec", "type", "repo_id", "revision", "commit", "format", "split", "photos")} == {
        "spec": spec, "type": "hub_dataset", "repo_id": "you/shapes", "revision": "refs/convert/parquet",
        "commit": COMMIT_2, "format": "parquet", "split": "train", "photos": 6}
    assert Path(row["path"]).is_relative_to(tmp_path / "cache")
    config = json.loads((run / "model" / "config.json").read_text())
    assert sorted(config["label_names"]) == sorted(PARQUET_LABELS)
    assert config["metrics"]["real_val_data"] == "test"                  # the repo's test split validates
    meta, body = read_front_matter((run / "model" / "README.md").read_text())
    assert "you/shapes" in meta["datasets"] and "| [you/shapes](https://huggingface.co/datasets/you/shapes) |" in body
    assert f"{COMMIT_2} | 6 |" in body


# --- sources split into train/ and test/ folders ----------------------------------------------------------------

FAST = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--device", "cpu", "--workers", "1"]


def split_files_of(splits: dict[str, int], classes=("circle", "square")) -> dict[str, bytes]:
    """An image-folder dataset split in folders: <split>/<class>/<n>.png, `splits[split]` photos per class."""
    return {f"{split}/{kind}/{i:02d}.png": io_bytes(shape_image(kind, 40, 100 * n + i), "PNG")
            for n, (split, count) in enumerate(splits.items()) for kind in classes for i in range(count)}


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def trained_on_splits(run: Path) -> tuple[list[str], dict, dict]:
    """(label names, the model's metrics, the one sources.json row) of a finished run."""
    config = json.loads((run / "model" / "config.json").read_text())
    (row,) = json.loads((run / "sources.json").read_text())["sources"]
    return config["label_names"], config["metrics"], row


def test_a_folder_of_train_and_test_splits_trains_on_train_and_validates_on_test(tmp_path, caplog):
    data = write_files(tmp_path / "shapes", split_files_of({"train": 8, "test": 3}))
    run = tmp_path / "run"
    with caplog.at_level("INFO"):
        assert train_main(["--data", str(data), *FAST, "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run)]) == 0
    labels, found, row = trained_on_splits(run)
    assert labels == ["circle", "square"]                                   # the classes, not the splits
    assert found["real_val_data"] == "test" and found["calibrated_on"] == "test"
    assert sum(map(sum, json.loads((run / "metrics.json").read_text())["real_val"]["confusion_matrix"])) == 6
    assert (row["photos"], row["split"], row["path"]) == (16, "train", str((data / "train").resolve()))
    assert "validating on the data's own test split" in caplog.text
    # a validation/ split is preferred to test/, and --val-data replaces them both
    write_files(data, split_files_of({"validation": 2}))
    assert sources.resolve(data).val_folder == data / "validation"
    other = make_shapes_folder(tmp_path / "other", per_class=1, size=40, classes=("circle", "square"))
    run = tmp_path / "run2"
    assert train_main(["--data", str(data), "--val-data", str(other), *FAST, "--cache-dir", str(tmp_path / "cache"),
                       "--run-dir", str(run)]) == 0
    assert trained_on_splits(run)[1]["real_val_data"] == "other"


def test_a_hub_dataset_of_split_folders_and_its_split_parameter(offline_cache, tmp_path):
    add_to_hf_cache(offline_cache, "you/split-shapes", {**split_files_of({"train": 8, "validation": 2, "test": 3}),
                                                         "README.md": b"# shapes\n"}, COMMIT_1, repo_type="dataset")
    spec = "hf://datasets/you/split-shapes"
    run = tmp_path / "run"
    assert train_main(["--data", spec, *FAST, "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run)]) == 0
    labels, found, row = trained_on_splits(run)
    assert labels == ["circle", "square"] and found["real_val_data"] == "validation"
    assert (row["photos"], row["split"], row["format"], row["commit"]) == (16, "train", "images", COMMIT_1)

    test = sources.resolve(f"{spec}?split=test")
    snapshot = offline_cache / "datasets--you--split-shapes" / "snapshots" / COMMIT_1
    assert (test.folder, test.split, test.val_folder) == (snapshot / "test", "test", snapshot / "validation")
    assert sources.resolve(f"{spec}?split=val").folder == snapshot / "validation"      # the split's other names too
    with pytest.raises(DataError, match=r"has no 'extra' split, only test/, train/, validation/"):
        sources.resolve(f"{spec}?split=extra")


# --- datasets in `datasets`' formats: metadata.csv, zip archives, Parquet files ---------------------------------

def metadata_folder(root: Path, rows: dict[str, int], split: str = "") -> Path:
    """An imagefolder described by metadata.csv (file_name,label), the photos all in one folder: `rows[kind]`
    photos of each kind, labelled by name."""
    folder = root / split if split else root
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file_name,label"]
    for kind, n in rows.items():
        for i in range(n):
            shape_image(kind, 40, 300 + i).save(folder / f"{kind[0]}{i:02d}.png")
            lines.append(f"{kind[0]}{i:02d}.png,{kind}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_an_image_folder_described_by_metadata_csv(tmp_path):
    from PIL import Image

    data = metadata_folder(tmp_path / "shapes", {"circle": 3, "square": 2}, "train")
    metadata_folder(data, {"circle": 1, "square": 1}, "test")
    source = sources.resolve(data, cache_dir=tmp_path / "cache")
    assert (source.format, source.split) == ("imagefolder", "train")
    assert source.folder.is_relative_to(tmp_path / "cache" / sources.DATASETS_FOLDER)
    assert tree(source.folder) == {"circle": 3, "square": 2} and tree(source.val_folder) == {"circle": 1, "square": 1}
    first = sorted((source.folder / "circle").iterdir())[0]
    assert Image.open(first).tobytes() == shape_image("circle", 40, 300).tobytes()   # the very photo, its label
    assert scan_folder(source.folder).classes == ["circle", "square"]
    again = sources.resolve(data, cache_dir=tmp_path / "cache")                   # written once
    assert again.folder == source.folder and first.stat().st_mtime_ns == sorted((again.folder / "circle").iterdir())[0].stat().st_mtime_ns
    (data / "train" / "metadata.csv").write_text("file_name,label\nc00.png,circle\n")   # a changed dataset: anew
    assert tree(sources.resolve(data, cache_dir=tmp_path / "cache").folder) == {"circle": 1}


def test_training_on_a_zip_archive_of_class_folders(tmp_path, caplog):
    import zipfile

    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for kind in ("circle", "square"):
            for i in range(6):
                z.writestr(f"shapes/{kind}/{i:02d}.png", io_bytes(shape_image(kind, 40, 500 + i), "PNG"))
    run = tmp_path / "run"
    with caplog.at_level("INFO"):
        assert train_main(["--data", str(archive), *FAST, "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run)]) == 0
    labels, _, row = trained_on_splits(run)
    assert labels == ["circle", "square"] and (row["photos"], row["format"], row["type"]) == (12, "zip", "folder")
    assert f"data: {archive} (zip archive, split train), 12 photos" in caplog.text


def test_a_local_parquet_file_and_a_string_label_column(tmp_path):
    import datasets

    rows = [("circle", 1), ("square", 2), ("triangle", 0)] * 2
    (tmp_path / "shapes.parquet").write_bytes(parquet_bytes(rows))
    source = sources.resolve(tmp_path / "shapes.parquet", cache_dir=tmp_path / "cache")
    assert (source.format, source.split, source.val_folder) == ("parquet", "train", None)
    assert tree(source.folder) == {"circle": 2, "square": 2, "triangle": 2}

    folder = tmp_path / "strings" / "data"
    folder.mkdir(parents=True)
    images = [{"bytes": io_bytes(shape_image(kind, 40, 700 + i), "PNG"), "path": None} for i, (kind, _) in enumerate(rows)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    for split, part in (("train", slice(0, 4)), ("test", slice(4, 6))):
        table = datasets.Dataset.from_dict({"image": images[part], "label": [kind for kind, _ in rows[part]]},
                                           features=features)
        table.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    source = sources.resolve(tmp_path / "strings", cache_dir=tmp_path / "cache")
    assert tree(source.folder) == {"circle": 2, "square": 1, "triangle": 1}      # named by the strings themselves
    assert tree(source.val_folder) == {"square": 1, "triangle": 1}


def test_a_hub_image_folder_with_metadata_and_its_split_parameter(offline_cache, tmp_path):
    local = metadata_folder(tmp_path / "meta", {"circle": 2, "square": 2}, "train")
    metadata_folder(local, {"circle": 1, "square": 1}, "test")
    add_to_hf_cache(offline_cache, "you/meta", {str(p.relative_to(local)): p.read_bytes()
                                               for p in sorted(local.rglob("*")) if p.is_file()}, COMMIT_1,
                    repo_type="dataset")
    train = sources.resolve("hf://datasets/you/meta", cache_dir=tmp_path / "cache")
    assert (train.format, train.split, train.commit) == ("imagefolder", "train", COMMIT_1)
    assert tree(train.folder) == {"circle": 2, "square": 2} and tree(train.val_folder) == {"circle": 1, "square": 1}
    test = sources.resolve("hf://datasets/you/meta?split=test", cache_dir=tmp_path / "cache")
    assert (test.split, tree(test.folder), test.val_folder) == ("test", {"circle": 1, "square": 1}, None)
    assert test.describe() == f"Hub dataset you/meta @ {COMMIT_1} (image folder with metadata or zip archives, split test)"


def test_what_a_hub_dataset_is_read_from_is_fetched():
    from huggingface_hub.utils import filter_repo_objects

    files = ["train/metadata.csv", "metadata.JSONL", "photos.zip", "train/a.png", "data/train-0.parquet",
             "data/test-0.parquet", "data/validation-0.parquet", "data/other-0.parquet", "README.md", "notes.csv"]
    assert list(filter_repo_objects(files, allow_patterns=sources.dataset_patterns("", "train"))) == files[:7]


def test_without_the_datasets_library_such_a_dataset_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    (tmp_path / "shapes.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "datasets", None)               # `import datasets` raises ImportError
    with pytest.raises(DataError, match=r"needs the `datasets` library: pip install 'cnn-animals\[train\]'"):
        sources.resolve(tmp_path / "shapes.parquet", cache_dir=tmp_path / "cache")


def test_a_file_that_is_no_dataset_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("photos elsewhere")
    with pytest.raises(DataError, match="is a file, but not a .zip or .parquet dataset"):
        sources.resolve(tmp_path / "notes.txt")


def test_a_cell_path_reads_no_file_outside_the_dataset(tmp_path):
    import zipfile

    from cnn.formats import photo_bytes

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.png").write_bytes(b"photo")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    with zipfile.ZipFile(tmp_path / "outside.zip", "w") as z:
        z.writestr("b.png", b"zipped")
    roots = [tmp_path / "data"]
    assert photo_bytes({"bytes": None, "path": "a.png"}, roots, None) == b"photo"
    for path in ("../secret.txt", str(tmp_path / "secret.txt"), "file://" + str(tmp_path / "secret.txt")):
        assert photo_bytes({"bytes": None, "path": path}, roots, None) is None
    zipped = f"zip://b.png::{tmp_path / 'outside.zip'}"
    assert photo_bytes({"bytes": None, "path": zipped}, roots, {}) is None           # an archive outside the dataset
    assert photo_bytes({"bytes": None, "path": zipped}, [tmp_path], {}) == b"zipped"
    assert photo_bytes({"bytes": None, "path": zipped}, [tmp_path], None) is None    # Parquet cells name no archive


def test_a_hub_dataset_of_zip_archives_named_by_split(offline_cache, tmp_path):
    import io
    import zipfile

    def archive(first_seed: int, n: int) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for kind in ("circle", "square"):
                for i in range(n):
                    z.writestr(f"{kind}/{i:02d}.png", io_bytes(shape_image(kind, 40, first_seed + i), "PNG"))
        return out.getvalue()

    add_to_hf_cache(offline_cache, "you/zipped", {"train.zip": archive(800, 3), "test.zip": archive(900, 1)},
                    COMMIT_1, repo_type="dataset")
    source = sources.resolve("hf://datasets/you/zipped", cache_dir=tmp_path / "cache")
    assert (source.format, source.split, source.commit) == ("imagefolder", "train", COMMIT_1)
    assert tree(source.folder) == {"circle": 3, "square": 3} and tree(source.val_folder) == {"circle": 1, "square": 1}
