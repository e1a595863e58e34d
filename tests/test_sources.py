"""Training from several sources: local folders and Hub dataset repos (from a pre-filled HF cache, offline),
merged by class name, with the exact sources and commits written into the run folder and the model card."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnn import sources
from cnn.config import TrainConfig, make_config
from cnn.data import DataError
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
    """A dataset repo as cnn.feedback writes it: <label>/<name>.jpg, none/, and the corrections log."""
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
        "default/test/0000.parquet": parquet_bytes([("square", 2)], seed=20)}, COMMIT_2,
        ref="refs/convert/parquet", repo_type="dataset")
    return "hf://datasets/you/shapes"


def tree(folder: Path) -> dict[str, int]:
    return {d.name: len(list(d.iterdir())) for d in sorted(folder.iterdir())}


def test_a_parquet_dataset_becomes_a_folder_per_class_in_the_cache(parquet_repo, tmp_path):
    from PIL import Image

    train = sources.resolve(parquet_repo, cache_dir=tmp_path / "cache")
    assert (train.repo_id, train.revision, train.commit, train.split) == ("you/shapes", None, COMMIT_1, "train")
    assert train.folder.is_relative_to(tmp_path / "cache" / "hub-parquet")
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

    with pytest.raises(DataError, match="nor Parquet files of split 'validation'"):
        sources.resolve(f"{parquet_repo}?split=validation", cache_dir=tmp_path)
    plain = io.BytesIO()
    pq.write_table(pa.table({"image": [b"x"], "label": [0]}), plain)      # no 'huggingface' metadata
    add_to_hf_cache(offline_cache, "you/plain", {"data/train-0.parquet": plain.getvalue()}, COMMIT_1,
                    repo_type="dataset")
    with pytest.raises(DataError, match="no Image column and ClassLabel column"):
        sources.resolve("hf://datasets/you/plain", cache_dir=tmp_path)
    with pytest.raises(DataError, match="nor Parquet files"):                  # ?split= means a Parquet repo
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
    assert sorted(json.loads((run / "model" / "config.json").read_text())["label_names"]) == sorted(PARQUET_LABELS)
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
