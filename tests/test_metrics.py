"""Scores: the calibration error and the calibrated "not sure" threshold the app uses."""
import torch

from cnn.metrics import expected_calibration_error, summarize, unsure_threshold


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
