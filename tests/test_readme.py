"""The README is the project's front door: short, its links live, and its headline figures those of the model it ships."""
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MODEL = REPO / "model"
MAX_README_LINES = 200


def without_code(markdown: str) -> str:
    """Markdown with fenced blocks and inline code removed, so that a bracket in a command is never read as a link."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M))


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", without_code(markdown), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def relative_links(markdown: str) -> list[str]:
    return [target for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", without_code(markdown))
            if not re.match(r"[a-z]+:", target)]


def agrees(printed: str, value: float) -> bool:
    """A printed figure agrees with a stored one when it is that value rounded to the digits it shows."""
    number = printed.replace(",", "")
    decimals = len(number.split(".")[1]) if "." in number else 0
    return abs(float(number) - value) <= 0.5 * 10 ** -decimals + 1e-9


def table_cell(markdown: str, row_starts: str, column: int = 1) -> str:
    """The cell in `column` of the first table row whose first cell starts with `row_starts`."""
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(row_starts):
            return cells[column]
    raise AssertionError(f"no table row starting with {row_starts!r}")


def test_the_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move reference text into docs/"


def test_every_doc_opens_with_a_title_and_what_it_holds():
    assert DOCS, "docs/ holds no Markdown file"
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        assert lines[0].startswith("# ") and not lines[1] and lines[2], f"{doc.name}: no title and summary line"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    text = page.read_text()
    for link in relative_links(text):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.is_file(), f"{page.name}: {link} points to no file"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target.read_text()), f"{page.name}: {link} points to no heading"


def test_the_readme_headline_figures_are_the_bundled_model_s():
    config = json.loads((MODEL / "config.json").read_text())
    metrics = config["metrics"]
    readme = README.read_text()
    model_section = readme[readme.index("## The bundled model"):]

    def percent(row_starts: str) -> str:
        return re.fullmatch(r"\**([\d.]+) %\**", table_cell(model_section, row_starts)).group(1)

    heldout, real = percent("top-1 on the held-out sources"), percent("top-1 on `animals-val`")
    assert agrees(heldout, 100 * metrics["heldout_val_accuracy"])
    assert agrees(real, 100 * metrics["real_val_accuracy"])
    assert agrees(percent("top-1 on the in-split hold-out"), 100 * metrics["val_accuracy"])
    assert agrees(percent("real animal photos wrongly flagged"), 100 * metrics["val_flagged_unknown"])
    assert agrees(table_cell(model_section, "expected calibration error"), metrics["val_ece"])
    animals, objects = re.fullmatch(r"(\d+) % / (\d+) %", table_cell(model_section, "other animals / objects")).groups()
    groups = metrics["unseen_outliers_by_group"]
    assert agrees(animals, 100 * groups["other_animals"]["flagged"])
    assert agrees(objects, 100 * groups["other_objects"]["flagged"])

    parameters = re.fullmatch(r"([\d.]+) M", table_cell(model_section, "parameters")).group(1)
    assert agrees(parameters, config["num_parameters"] / 1e6)
    side = config["pretrained_cfg"]["input_size"][-1]
    assert table_cell(model_section, "input") == f"{side}×{side}"
    weights = (MODEL / "model.safetensors").stat().st_size
    mb, mib = re.fullmatch(r"([\d.]+) MB \(([\d.]+) MiB\)", table_cell(model_section, "weights")).groups()
    assert agrees(mb, weights / 1e6) and agrees(mib, weights / 2**20)

    intro = readme[readme.index("# cnn"):readme.index("## The two commands")]
    assert f"**{heldout} %**" in intro and f"**{real} %**" in intro
    said = re.search(r"(\d+) % of photos of\s+objects and scenes and (\d+) % of other animals", intro)
    assert said and said.groups() == (objects, animals)
    wrongly = re.search(r"wrongly, for ([\d.]+) % of real animal\s+photos", intro).group(1)
    assert agrees(wrongly, 100 * metrics["val_flagged_unknown"])


def test_the_results_page_gives_the_same_headline_figures():
    metrics = json.loads((MODEL / "config.json").read_text())["metrics"]
    results = (REPO / "docs" / "results.md").read_text()
    for row_starts, key in [("top-1 on the held-out sources", "heldout_val_accuracy"),
                            ("top-1 on `animals-val`", "real_val_accuracy")]:
        printed = re.fullmatch(r"\**([\d.]+) %\**", table_cell(results, row_starts)).group(1)
        assert agrees(printed, 100 * metrics[key]), (row_starts, printed)
