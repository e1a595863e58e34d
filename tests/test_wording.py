"""One way to write a share and the "none of the N" flag (cnn.wording), wherever a person reads them."""
from __future__ import annotations

import pytest

from cnn.wording import none_of, percent, whole_percent


@pytest.mark.parametrize("share, text", [(0.5345, "53%"), (0.8259, "83%"), (0.125, "13%"), (0.005, "1%"),
                                         (0.0, "0%"), (1.0, "100%"), (0.825, "83%")])
def test_percent_rounds_as_the_pages_label_does(share, text):
    # Gradio's Label shows Math.round(p * 100) + "%": half up (Python's own round() would give 82% for 0.825)
    assert percent(share) == text and whole_percent(share) == int(text[:-1])   # the batch table's number column


def test_none_of_names_how_many_labels():
    assert none_of(10) == "none of the 10" and none_of(3) == "none of the 3"
