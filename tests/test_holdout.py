"""Whole sources held out from training (cnn.holdout): the split, and a run that measures on them."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch

from cnn.config import make_config
from cnn.data import DataError, scan_folder, scan_photos
from cnn.engine import Runtime, fit, load_outliers
from cnn.holdout import HoldoutSpec, held_out, kinds_of, split_by_source
from imagegen import make_outlier_folder, make_web_photos, shape_image
from train.evaluate import main as evaluate_main

SOURCES = {"lab/shapes-a": range(0, 30), "web/shapes-b": range(30, 40)}   # photo number → its source
KINDS = {"kind zero": "k0", "kind one": "k1", "kind two": "k2"}             # outlier photo i is of kind i % 3


def make_sourced_data(root: Path) -> Path:
    """root/animals/<shape>/NNN.jpg, root/other/<group>/NNN.jpg and root/sources.csv naming a source for every
    photo, laid out as ../shared/data is: the CSV sits in the folder above the data folders, and an outlier
    photo's path_in_repo names its kind by a folder (set/k<i % 3>/images/NNN.jpg), as Tiny-ImageNet's do."""
    rows = []
    for kind in ("circle", "square", "triangle"):
        (root / "animals" / kind).mkdir(parents=True)
        for repo, numbers in SOURCES.items():
            for i in numbers:
                shape_image(kind, 64, i).save(root / "animals" / kind / f"{i:03d}.jpg")
                rows.append((f"animals/{kind}/{i:03d}.jpg", kind, repo))
    make_outlier_folder(root / "other", per_group=20)
    for group in ("background", "stripes"):
        for i, path in enumerate(sorted((root / "other" / group).iterdir())):
            rows.append((f"other/{group}/{path.name}", group, "web/other-b" if i < 8 else "lab/other-a",
                         f"set/k{i % 3}/images/{path.name}"))
    with open(root / "sources.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "class", "repo", "path_in_repo", "license"])
        writer.writerows((row[0], row[1], row[2], row[3] if len(row) > 3 else "x", "none") for row in rows)
    return root


def write_spec(path: Path, held: list[str], **more) -> Path:
    path.write_text(json.dumps({"about": "test", "sources_csv": "sources.csv", "held_out": held, **more}))
    return path


@pytest.fixture(scope="module")
def sourced(tmp_path_factory) -> Path:
    return make_sourced_data(tmp_path_factory.mktemp("sourced"))


def test_whole_sources_leave_the_training_side(sourced, tmp_path):
    spec = HoldoutSpec.read(write_spec(tmp_path / "held.json", ["web/shapes-b"]))
    train, held = split_by_source(scan_folder(sourced / "animals"), spec)
    assert len(train.paths) == 3 * 30 and len(held.paths) == 3 * 10
    assert all(int(Path(p).stem) >= 30 for p in held.paths)        # exactly that source's photos
    assert not set(train.paths) & set(held.paths)
    assert held.classes == train.classes and sorted(set(held.labels)) == [0, 1, 2]   # every class covered


def test_the_split_follows_symlinked_views_of_the_same_photos(sourced, tmp_path):
    view = tmp_path / "view"
    for kind in ("circle", "square"):
        (view / kind).mkdir(parents=True)
        for photo in sorted((sourced / "animals" / kind).iterdir())[:35]:
            (view / kind / photo.name).symlink_to(photo)
    (tmp_path / "sources.csv").symlink_to(sourced / "sources.csv")   # found in the folder above the view
    spec = HoldoutSpec.read(write_spec(tmp_path / "held.json", ["web/shapes-b"]))
    _, held = split_by_source(scan_folder(view), spec)
    assert len(held.paths) == 2 * 5


def test_outliers_of_held_out_sources_are_marked(sourced, tmp_path):
    spec = HoldoutSpec.read(write_spec(tmp_path / "held.json", ["web/other-b"]))
    listing = scan_photos(sourced / "other")
    assert sum(held_out(listing, listing.paths, spec)) == 2 * 8


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("not json", "not valid"),
    ('{"held_out": []}', "names no source"),
    ('{"held_out": ["nobody/none"]}', "none of the photos comes from a source"),
])
def test_bad_holdout_files_say_what_is_wrong(sourced, tmp_path, content, message):
    path = tmp_path / "held.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        split_by_source(scan_folder(sourced / "animals"), HoldoutSpec.read(path))


def test_without_a_sources_csv_the_split_says_what_it_needs(tmp_path):
    data = tmp_path / "deep" / "animals"
    for kind in ("circle", "square"):
        (data / kind).mkdir(parents=True)
        shape_image(kind, 32, 0).save(data / kind / "0.jpg")
    spec = HoldoutSpec.read(write_spec(tmp_path / "held.json", ["web/shapes-b"]))
    with pytest.raises(DataError, match="no sources.csv found"):
        split_by_source(scan_folder(data), spec)


@pytest.fixture(scope="module")
def heldout_run(sourced, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("heldout-run")
    val = make_web_photos(root / "web-photos", per_class=12, first_seed=2000)
    spec = write_spec(root / "held.json", ["web/shapes-b", "web/other-b"], kinds=KINDS,
                      kind_folds=[["kind zero", "kind two"], ["kind one"]])
    cfg = make_config(kind_fold=1, data=str(sourced / "animals"), val_data=str(val), holdout_sources=str(spec),
                      outliers=str(sourced / "other"), outlier_fraction=0.5, run_dir=str(root / "run"), epochs=4,
                      image_size=48, batch_size=32, lr=0.1, workers=1, cache_dir=str(root / "cache"),
                      model_args={"widths": [16, 32, 64, 128]})
    return fit(cfg)


def test_a_run_reports_the_held_out_sources_and_picks_by_the_worse_figure(heldout_run):
    m = json.loads((heldout_run / "metrics.json").read_text())
    split = json.loads((heldout_run / "split.json").read_text())
    assert not any(int(Path(p).stem) >= 30 for p in split["train"] + split["val"])   # never trained on
    history = m["history"]
    assert all("heldout_val_accuracy" in row and "real_val_accuracy" in row for row in history)
    worst = [min(row["heldout_val_accuracy"], row["real_val_accuracy"]) for row in history]
    assert worst[m["best_epoch"] - 1] == max(worst)
    config = json.loads((heldout_run / "model" / "config.json").read_text())["metrics"]
    assert config["heldout_val_data"] == "held-out sources (held.json)"
    assert config["worst_real_accuracy"] == min(config["heldout_val_accuracy"], config["real_val_accuracy"])
    assert 0 <= config["unseen_outliers_flagged"] <= 1           # other/ photos of the held-out source measured
    by_group = config["unseen_outliers_by_group"]                # ... and per group (sub-folder of other/)
    assert set(by_group) == {"background", "stripes"} and sum(g["photos"] for g in by_group.values()) == 2 * 8
    assert 0 <= config["unseen_kinds_flagged"] <= 1              # the held-out kind, of every source, measured
    assert config["unseen_kinds_by_kind"] == {"kind one": {"photos": 2 * 7, "flagged": config["unseen_kinds_flagged"]}}
    card = (heldout_run / "model" / "README.md").read_text()
    assert "kinds of animal it never trained on" in card and "kind one: 14 photos" in card


def test_outliers_of_held_out_kinds_never_teach_and_are_measured(sourced, tmp_path):
    spec = HoldoutSpec.read(write_spec(tmp_path / "held.json", ["web/other-b"], kinds=KINDS,
                                       kind_folds=[["kind zero"], ["kind one", "kind two"]]), kind_fold=1)
    assert spec.held_out_kinds == ["kind one", "kind two"]
    listing = scan_photos(sourced / "other")
    kinds = kinds_of(listing, listing.paths, spec)
    assert kinds == [list(KINDS)[int(Path(p).stem) % 3] for p in listing.paths]
    cfg = make_config(data=str(sourced / "animals"), outliers=str(sourced / "other"), kind_fold=1, outlier_holdout=0.25,
                      workers=1, cache_dir=str(tmp_path / "cache"))
    found = load_outliers(cfg, scan_folder(sourced / "animals"), 48, Runtime(torch.device("cpu")), spec)
    unseen_kinds = sorted(found.unseen_kinds.tolist())
    assert [found.kinds[i] for i in unseen_kinds] == [k for k in found.kinds if k in ("kind one", "kind two")]
    assert len(unseen_kinds) == 2 * sum(1 for i in range(20) if i % 3)          # every photo of those kinds ...
    taught = found.train.tolist() + found.held.tolist()
    assert {found.kinds[i] for i in taught} == {"kind zero"}                     # ... and none teaches or tunes
    assert not set(taught) & set(found.unseen.tolist())                          # nor one of a held-out source
    assert len(taught) == 2 * sum(1 for i in range(8, 20) if i % 3 == 0)


def test_with_kinds_tune_only_the_named_kinds_fit_the_probe_but_never_teach(sourced, tmp_path):
    """The look-alike kinds are 64 px crops: outlier exposure to them teaches size (docs/none-of-the-ten.md), so
    with kinds_tune_only they only fit the probe; photos of no named kind still teach."""
    named = {"kind zero": "k0", "kind one": "k1"}                             # kind-two photos are of no named kind
    spec = HoldoutSpec.read(write_spec(tmp_path / "held.json", ["web/other-b"], kinds=named,
                                       kind_folds=[["kind one"]]))
    cfg = make_config(data=str(sourced / "animals"), outliers=str(sourced / "other"), outlier_holdout=0,
                      kinds_tune_only=True, workers=1, cache_dir=str(tmp_path / "cache"))
    found = load_outliers(cfg, scan_folder(sourced / "animals"), 48, Runtime(torch.device("cpu")), spec)
    assert {found.kinds[i] for i in found.train.tolist()} == {""}               # only photos of no named kind teach
    assert {found.kinds[i] for i in found.tune.tolist()} == {"", "kind zero"}   # the seen named kind fits the probe
    assert set(found.train.tolist()) < set(found.tune.tolist())
    assert not {found.kinds[i] for i in found.tune.tolist()} & {"kind one"}     # the held-out kind does neither
    taught = load_outliers(make_config(**{**cfg.to_dict(), "kinds_tune_only": False}), scan_folder(sourced / "animals"),
                           48, Runtime(torch.device("cpu")), spec)
    assert torch.equal(taught.train, taught.tune) and torch.equal(taught.tune, found.tune)


@pytest.mark.parametrize("more, message", [
    ({"kinds": ["k0"]}, "not valid"),
    ({"kinds": KINDS, "kind_folds": [["kind three"]]}, "names kinds that 'kinds' does not define: kind three"),
    ({"kinds": KINDS, "kind_folds": [["kind one"]], "fold": 3}, "kind fold 3 does not exist"),
])
def test_bad_kinds_say_what_is_wrong(tmp_path, more, message):
    fold = more.pop("fold", 0)
    with pytest.raises(DataError, match=message):
        HoldoutSpec.read(write_spec(tmp_path / "held.json", ["web/other-b"], **more), kind_fold=fold)


def test_a_fold_whose_kinds_no_photo_has_is_refused(sourced, tmp_path):
    spec = HoldoutSpec.read(write_spec(tmp_path / "held.json", ["web/other-b"], kinds={**KINDS, "kind nine": "k9"},
                                       kind_folds=[["kind nine"]]))
    cfg = make_config(data=str(sourced / "animals"), outliers=str(sourced / "other"), workers=1,
                      cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no outlier photo is of the held-out kinds kind nine"):
        load_outliers(cfg, scan_folder(sourced / "animals"), 48, Runtime(torch.device("cpu")), spec)


def test_the_shipped_kind_folds_hold_out_every_kind_once():
    """train/held_out_sources.json's folds: every look-alike mammal kind of ../shared/data/other is never seen by
    exactly one fold's run, so that the folds together measure every kind as never trained on."""
    spec = HoldoutSpec.read(Path(__file__).resolve().parent.parent / "train" / "held_out_sources.json")
    folded = [kind for fold in spec.kind_folds for kind in fold]
    assert len(spec.kinds) == 15 and sorted(folded) == sorted(spec.kinds)       # each kind in exactly one fold
    assert len(spec.kind_folds) == 3 and {len(fold) for fold in spec.kind_folds} == {5}
    assert len(set(spec.kinds.values())) == 15 and all(re.fullmatch(r"n\d{8}", f) for f in spec.kinds.values())


def test_evaluate_scores_only_the_held_out_sources_and_reports_outliers_per_group_and_source(
        heldout_run, sourced, capsys):
    code = evaluate_main(["--model", str(heldout_run / "model"), "--data", str(sourced / "animals"),
                          "--holdout-sources", str(heldout_run.parent / "held.json"),
                          "--outliers", str(sourced / "other"), "--kind-fold", "1", "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "(30 photos)" in out and "held-out sources only" in out
    assert re.search(r"  source     web/shapes-b +\d+% of 30\n", out)       # accuracy per source: the held-out one
    pooled = evaluate_main(["--model", str(heldout_run / "model"), "--data", str(sourced / "animals"), "--workers", "1",
                            "--json", str(heldout_run.parent / "all.json")])
    result = json.loads((heldout_run.parent / "all.json").read_text())
    rows = result["accuracy_by_source"]                      # both sources: the worst and the equal-weighted mean
    assert pooled == 0 and set(rows) == {"lab/shapes-a", "web/shapes-b"}
    assert result["worst_source_accuracy"] == min(row["accuracy"] for row in rows.values())
    assert result["accuracy_sources_weighted_equally"] == round(sum(row["accuracy"] for row in rows.values()) / 2, 4)
    assert "sources weighted equally" in capsys.readouterr().out
    for line in ("by group   background", "by group   stripes", "by source  lab/other-a", "by source  web/other-b",
                 "by kind    kind zero ", "by kind    kind one (never trained on)"):
        assert line in out
    assert "kinds never trained on, together" in out


@pytest.mark.parametrize("name, swapped_in", [("held_out_sisso16.json", "Sisso16/ssn_pytorch"),
                                              ("held_out_zhangtao7750.json", "zhangtao7750/syn")])
def test_the_shipped_leave_one_source_out_files_swap_exactly_one_outlier_source(name, swapped_in):
    """bench/held_out_*.json measure 'none of the ten' on another unseen source: each must hold out the bundled
    model's animal sources unchanged, so that only the outliers' unseen source differs."""
    repo = Path(__file__).resolve().parent.parent
    bundled = HoldoutSpec.read(repo / "train" / "held_out_sources.json")
    loso = HoldoutSpec.read(repo / "bench" / name)
    assert set(bundled.held_out) - set(loso.held_out) == {"EliSchwartz/imagenet-sample-images"}
    assert set(loso.held_out) - set(bundled.held_out) == {swapped_in}
    assert loso.sources_csv == bundled.sources_csv and swapped_in in loso.about
