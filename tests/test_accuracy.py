"""top_k_accuracy / mean_class_accuracy on hand-computed cases (spec-recognition.md §A4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from actionkit.evaluation.accuracy import confusion_matrix, mean_class_accuracy, top_k_accuracy

SCORES = np.array([[0.1, 0.5, 0.4],
                   [0.7, 0.2, 0.1],
                   [0.3, 0.3, 0.4],
                   [0.2, 0.5, 0.3]])
LABELS = [2, 0, 1, 1]


def test_top_k_accuracy_hand_case():
    # top-1 predictions 1, 0, 2, 1 -> hits on samples 1 and 3
    assert top_k_accuracy(SCORES, LABELS, (1, 2, 3)) == [0.5, 1.0, 1.0]
    assert top_k_accuracy(list(SCORES), np.array(LABELS), topk=1) == [0.5]
    # default topk=(1, 5); k larger than K takes every class
    assert top_k_accuracy(SCORES, LABELS) == [0.5, 1.0]


def test_top_k_ties_follow_argsort():
    # argsort([.3, .3, .4]) = [0, 1, 2]: top-2 is [2, 1], so label 1 is a hit and label 0 is not
    s = np.array([[0.3, 0.3, 0.4]])
    assert top_k_accuracy(s, [1], (2,)) == [1.0]
    assert top_k_accuracy(s, [0], (2,)) == [0.0]
    # a label outside the score columns never hits
    assert top_k_accuracy(s, [7], (1, 3)) == [0.0, 0.0]


def test_mean_class_accuracy_hand_case():
    # classes {0,1,2}: 0 -> 1/1, 1 -> 1/2, 2 -> 0/1
    assert mean_class_accuracy(SCORES, LABELS) == pytest.approx(0.5)
    np.testing.assert_array_equal(confusion_matrix([1, 0, 2, 1], LABELS), [[1, 0, 0], [0, 1, 1], [0, 1, 0]])


def test_mean_class_accuracy_counts_predicted_only_class_as_zero():
    s = np.zeros((2, 4))
    s[0, 0] = 1
    s[1, 3] = 1
    # label set {0, 3}: class 0 -> 1/2, class 3 (never a label) -> 0
    assert mean_class_accuracy(s, [0, 0]) == pytest.approx(0.25)
    assert mean_class_accuracy(torch.tensor(s), torch.tensor([0, 3])) == 1.0


@pytest.mark.parametrize("scores, labels, msg", [
    (np.zeros(3), [0, 1, 2], r"scores must be \[N, K\]"),
    (np.zeros((3, 2)), [0, 1], r"labels must be \[N\] with N = 3"),
    (np.zeros((0, 2)), [], "no samples"),
    (np.zeros((2, 2)), [0, -1], "labels must be >= 0"),
    (np.zeros((2, 2)), [0.5, 1], "labels must be integers"),
])
def test_bad_input(scores, labels, msg):
    with pytest.raises(ValueError, match=msg):
        top_k_accuracy(scores, labels)
    with pytest.raises(ValueError, match=msg):
        mean_class_accuracy(scores, labels)
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k_accuracy(np.zeros((1, 2)), [0], (0,))
