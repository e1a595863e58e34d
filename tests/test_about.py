"""What the page says about its model (cnn.about): the header's origin line and the "About this model" text."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cnn import about
from cnn.inference import Classifier
from imagegen import shape_image

REAL = {"real_val_accuracy": 0.832, "real_val_data": "web-photos-2025",
        "real_val_per_class": {"circle": {"precision": 0.9, "recall": 0.8, "support": 50},
                               "square": {"precision": 0.75, "recall": 0.6, "support": 40}}}


@pytest.fixture
def folder(model_dir, tmp_path) -> Path:
    """A copy of the trained shapes model folder, to add and remove things from."""
    return Path(shutil.copytree(model_dir, tmp_path / "runs" / "shapes" / "model"))


def with_metrics(clf: Classifier, **metrics) -> Classifier:
    config = {**clf.config, "metrics": {**clf.config["metrics"], **metrics}}
    return Classifier(clf.model, config, clf.source, clf.folder)


def test_origin_never_shows_a_server_path(folder):
    clf = Classifier.from_pretrained(folder)
    assert about.origin(clf, bundled=folder) == "bundled model"
    assert about.origin(clf, bundled=folder.parent) == "shapes/model"          # a run's model folder
    renamed = Path(shutil.copytree(folder, folder.parent / "my-cats"))
    assert about.origin(Classifier.from_pretrained(renamed), bundled=folder) == "my-cats"
    hub = Classifier(clf.model, clf.config, "Hub user/name @ v1", folder)
    assert about.origin(hub, bundled=folder) == "user/name @ v1"
    for text in (about.header(clf, folder.parent), about.header(hub, folder)):
        assert str(folder.parent.parent) not in text


def test_header_names_the_real_photo_accuracy_when_there_is_one(folder):
    clf = Classifier.from_pretrained(folder)
    in_split = clf.config["metrics"]["val_accuracy"]
    line = about.header(clf, folder)
    assert line.startswith(f"**Model:** {clf.config['architecture']} · {clf.num_parameters / 1e6:.2f} M parameters")
    assert f"in-split validation accuracy {in_split:.1%}" in line and "real-photo" not in line
    assert line.endswith(" · bundled model")
    line = about.header(with_metrics(clf, **REAL), folder)
    assert f"accuracy on real-photo validation set 83.2% · in-split validation accuracy {in_split:.1%}" in line
    bare = Classifier(clf.model, {**clf.config, "metrics": {}}, clf.source, folder)
    assert "accuracy" not in about.header(bare, folder)


def test_plain_words_say_what_the_model_knows_how_often_it_is_right_and_link_its_repo(folder):
    clf = Classifier.from_pretrained(folder)
    local = about.plain_words(clf)
    assert local.startswith("It knows 3 kinds of photo") and about.repo_url(clf) is None and "http" not in local
    assert f"{clf.config['metrics']['val_accuracy']:.0%} of photos held back from its training" in local
    real = with_metrics(clf, **REAL, unknown_below=0.3)
    assert "says so when a photo shows none of them" in about.plain_words(real)
    assert "right on 83% of 90 photos from elsewhere" in about.plain_words(real)
    hub = Classifier(clf.model, clf.config, "Hub user/cats @ v2 (1a2b3c4)", folder)
    assert about.repo_url(hub) == "https://huggingface.co/user/cats"
    assert "(https://huggingface.co/user/cats)" in about.plain_words(hub)
    bare = Classifier(clf.model, {**clf.config, "metrics": {}}, clf.source, folder)
    assert about.plain_words(bare) == "It knows 3 kinds of photo (the ones listed above)."


def test_about_text_from_the_config_and_the_card(folder):
    clf = Classifier.from_pretrained(folder)
    text = about.about_markdown(clf)
    assert f"`{clf.config['architecture']}`" in text and f"{clf.num_parameters:,} parameters" in text
    assert f"{clf.image_size}×{clf.image_size} input" in text and "MB of weights" in text
    assert "circle, square, triangle" in text
    assert "python -m train" in text or "Recipe:" in text                      # the card's training section
    assert f"In-split validation accuracy {clf.config['metrics']['val_accuracy']:.1%}." in text
    assert "From the model card:" in text and "| circle |" in text           # the card's per-class table
    assert "### Intended use and limitations" in text and "decisions that matter" in text
    assert "![" not in text                                                  # plots are shown as images instead

    text = about.about_markdown(with_metrics(clf, **REAL))
    assert "Accuracy on real-photo validation set 83.2%; in-split validation accuracy" in text
    assert "*web-photos-2025*" in text
    assert "| circle | 90.0% | 80.0% | 50 |" in text and "| square | 75.0% | 60.0% | 40 |" in text
    assert "From the model card:" not in text


def test_about_text_without_a_card(folder):
    (folder / "README.md").unlink()
    text = about.about_markdown(Classifier.from_pretrained(folder))
    assert "### Intended use and limitations\n" + about.LIMITATIONS in text and "From the model card" not in text


def test_card_sections():
    card = "---\nlicense: mit\n---\n\n# Title\n\nintro\n\n## Results\n\n| a | b |\n\n![plot](curves.png)\n\n## Use\n\ntext\n"
    assert about.card_sections(card) == {"Results": "| a | b |", "Use": "text"}


def test_plots_and_examples_only_when_the_folder_has_them(folder):
    clf = Classifier.from_pretrained(folder)
    assert [p.name for p, _ in about.plots(folder)] == ["curves.png", "confusion.png"]
    assert about.model_examples(clf) == []
    (folder / "curves.png").unlink()
    assert [p.name for p, _ in about.plots(folder)] == ["confusion.png"]
    (folder / "examples").mkdir()
    shape_image("circle", 48, 0).save(folder / "examples" / "b.PNG")
    shape_image("square", 48, 0).save(folder / "examples" / "a.jpg")
    (folder / "examples" / "notes.txt").write_text("not a photo")
    assert [p.name for p in about.model_examples(clf)] == ["a.jpg", "b.PNG"]
