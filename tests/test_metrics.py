"""Scores: the calibration error and the calibrated "not sure" threshold the app uses; the sheet of wrong answers."""
import torch

from PIL import Image

from cnn.metrics import (calibrate, expected_calibration_error, fit_temperature, flag_rates, plot_mistakes, summarize,
                         unknown_threshold, unsure_threshold, worst_mistakes)


def answers(confidences: list[float], right: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class probabilities whose top answer (class 0) has the given confidence; targets say if it is right."""
    conf = torch.tensor(confidences, dtype=torch.float64)
    probs = torch.stack([conf, 1 - conf], 1)
    targets = torch.tensor([0 if r else 1 for r in right])
    return probs, targets


def test_a_perfectly_calibrated_model_has_zero_ece():
    probs, targets = answers([0.75] * 100, [True] * 75 + [False] * 25)
    assert expected_calibration_error(probs, targets) < 1e-9


def test_unsure_threshold_is_the_top_of_the_bins_that_are_mostly_wrong():
    # 0.55-0.6: right 30 % of the time; 0.65-0.7: right 45 %; 0.85-0.9: right 90 %
    probs, targets = answers([0.58] * 40 + [0.68] * 40 + [0.88] * 40,
                             [True] * 12 + [False] * 28 + [True] * 18 + [False] * 22 + [True] * 36 + [False] * 4)
    assert unsure_threshold(probs, targets) == 0.7
    assert summarize(probs, targets, ["a", "b"])["unsure_below"] == 0.7


def test_unsure_threshold_ignores_bins_too_small_to_judge_and_defaults_to_one_half():
    probs, targets = answers([0.58] * 5 + [0.95] * 100, [False] * 5 + [True] * 100)
    assert unsure_threshold(probs, targets) == 0.5


def test_temperature_scaling_fixes_an_under_confident_model():
    # right 90 % of the time but only ~55 % sure: a temperature under 1 sharpens the answers
    torch.manual_seed(0)
    logits = torch.randn(2000, 4)
    targets = logits.argmax(1)
    wrong = torch.rand(2000) < 0.1
    targets[wrong] = (targets[wrong] + 1) % 4
    probs = (logits / 2).softmax(1)
    t = fit_temperature(probs, targets)
    assert t < 0.7
    assert expected_calibration_error(calibrate(probs, t), targets) < expected_calibration_error(probs, targets) / 2
    assert torch.equal(calibrate(probs, t).argmax(1), probs.argmax(1))      # the ranking never changes
    assert torch.allclose(calibrate(probs, t).sum(1), torch.ones(2000, dtype=probs.dtype))
    assert calibrate(probs, 1.0) is probs


def test_unknown_threshold_flags_the_asked_share_of_real_photos():
    probs, _ = answers([i / 100 for i in range(50, 100)] * 2, [True] * 100)
    threshold = unknown_threshold(probs, 0.1)
    assert 0.54 <= threshold <= 0.55
    assert (probs.max(1).values < threshold).double().mean().item() == 0.1


def four_class_answers(confidences: list[float], right: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Like `answers`, with four classes, so that a top probability can be under one half."""
    conf = torch.tensor(confidences, dtype=torch.float64)[:, None]
    probs = torch.cat([conf, (1 - conf).expand(-1, 3) / 3], 1)
    return probs, torch.tensor([0 if r else 1 for r in right])


def test_flag_rates_count_what_each_warning_catches():
    # 10 answers: 6 right (conf 0.9 ×4, 0.45, 0.3), 4 wrong (0.9, 0.45, 0.3 ×2); not sure < 0.5, unknown < 0.35
    probs, targets = four_class_answers([0.9] * 4 + [0.45, 0.3] + [0.9, 0.45, 0.3, 0.3], [True] * 6 + [False] * 4)
    outliers, _ = four_class_answers([0.3, 0.3, 0.3, 0.45, 0.9], [True] * 5)
    rates = flag_rates(probs, targets, unsure_below=0.5, unknown=probs.max(1).values < 0.35, outlier_probs=outliers,
                       outlier_unknown=outliers.max(1).values < 0.35)
    assert rates["wrong_warned"] == 0.75            # 3 of the 4 wrong answers get a warning
    assert rates["right_passed"] == round(4 / 6, 4)  # 4 of the 6 right ones pass without one
    assert rates["accuracy_when_confident"] == 0.8   # 4 of the 5 unwarned answers are right
    assert rates["val_flagged_unknown"] == 0.3 and rates["outliers_flagged"] == 0.6 and rates["outliers_warned"] == 0.8
    assert rates["flagged_were_wrong"] == round(2 / 3, 4)   # of the 3 flagged (conf 0.3), 1 right and 2 wrong
    nothing = flag_rates(probs, targets, 0.5, torch.zeros(len(probs), dtype=torch.bool))
    assert "outliers_flagged" not in nothing and nothing["flagged_were_wrong"] is None
    # a photo flagged by another rule (the feature distance) counts as warned whatever its probability
    far = torch.zeros(len(probs), dtype=torch.bool)
    far[0] = True
    assert flag_rates(probs, targets, 0.5, far)["right_passed"] == round(3 / 6, 4)


def three_class_answers() -> tuple[torch.Tensor, torch.Tensor]:
    """Six photos of classes 0, 0, 0, 1, 1, 2: photos 1 and 2 wrongly called 1 and 2 (0.6, 0.9 sure), photo 4 wrongly
    called 0 (0.5 sure); the rest right."""
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.05, 0.05, 0.9],
                          [0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    return probs, torch.tensor([0, 0, 0, 1, 1, 2])


def test_worst_mistakes_are_each_class_wrong_answers_most_confident_first():
    probs, targets = three_class_answers()
    assert worst_mistakes(probs, targets, per_class=5) == {0: [2, 1], 1: [4]}   # class 2: nothing wrong, no row
    assert worst_mistakes(probs, targets, per_class=1) == {0: [2], 1: [4]}


def test_the_mistakes_sheet_has_one_row_per_class_with_wrong_answers(tmp_path):
    probs, targets = three_class_answers()
    images = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8)
    plot_mistakes(images, probs, targets, ["a", "b", "c"], tmp_path / "two_rows.png")
    right = torch.nn.functional.one_hot(targets, 3).double()
    plot_mistakes(images, right, targets, ["a", "b", "c"], tmp_path / "none.png")    # says so on a one-row sheet
    with Image.open(tmp_path / "two_rows.png") as two, Image.open(tmp_path / "none.png") as none:
        assert two.height > 1.5 * none.height and two.width == none.width + 160   # two rows, two photos wide
