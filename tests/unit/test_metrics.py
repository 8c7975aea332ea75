import numpy as np

from hf_transfer.metrics import classification_report


def test_report_matches_hand_computation():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 2, 2])
    report = classification_report(labels, predictions, ["a", "b", "c"])
    assert report["accuracy"] == 4 / 6
    # a: p=1, r=2/3 -> f1=0.8 ; b: p=1/2, r=1/2 -> 0.5 ; c: p=1/2, r=1 -> 2/3
    assert np.isclose(report["f1_macro"], (0.8 + 0.5 + 2 / 3) / 3)
    assert report["per_class"]["c"] == {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}


def test_class_never_predicted_scores_zero_not_nan():
    report = classification_report(np.array([0, 1]), np.array([0, 0]), ["a", "b"])
    assert report["per_class"]["b"]["f1"] == 0.0 and np.isfinite(report["f1_macro"])
