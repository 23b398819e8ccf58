"""Metrics (SPEC "Metrics", paper eqs. 11, 14-16) on hand-made confusion matrices and known signals."""

import math

import numpy as np
import pytest
import torch

from cycleseg.core.metrics import class_iou, confusion_matrix, mean_iou, psnr_db, snr_db


# --- Confusion matrix ---
def test_confusion_matrix_matches_loop_count_and_skips_invalid_targets():
    torch.manual_seed(0)
    k = 6
    pred = torch.randint(0, k, (2, 9, 11))
    target = torch.randint(-1, k + 2, (2, 9, 11))  # -1, 6 and 7 are outside [0, K)
    target[0, 0, :3] = 255
    ref = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if 0 <= t < k:
            ref[t, p] += 1
    conf = confusion_matrix(pred, target, k)
    assert conf.shape == (k, k)
    np.testing.assert_array_equal(conf.numpy(), ref)
    assert int(conf.sum()) == int(((target >= 0) & (target < k)).sum())


def test_confusion_matrix_rows_are_ground_truth():
    pred = torch.tensor([[1, 1, 1]])
    target = torch.tensor([[0, 0, 2]])
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[0, 2, 0], [0, 0, 0], [0, 1, 0]]


def test_confusion_matrices_of_batches_add_up_to_the_split():
    torch.manual_seed(1)
    pred = torch.randint(0, 20, (4, 8, 8))
    target = torch.randint(0, 20, (4, 8, 8))
    whole = confusion_matrix(pred, target, 20)
    parts = confusion_matrix(pred[:1], target[:1], 20) + confusion_matrix(pred[1:], target[1:], 20)
    assert torch.equal(whole, parts)


def test_confusion_matrix_shape_mismatch_raises():
    with pytest.raises(ValueError):
        confusion_matrix(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5), 20)


# --- IoU on a hand-made 20 x 20 matrix (rows = ground truth, 19 = background) ---
def hand_confusion():
    c = torch.zeros(20, 20, dtype=torch.int64)
    # class 0: 5 correct, 1 as class 1, 1 as class 3, 2 as background (FN, background predicted on a real class)
    c[0, 0], c[0, 1], c[0, 3], c[0, 19] = 5, 1, 1, 2
    # class 1: absent from ground truth, predicted once (from class 0) -> IoU 0
    # class 2: absent from ground truth; predicted only on background pixels -> NaN (background GT is ignored)
    # class 3: 3 correct, 2 as class 0, 1 as background
    c[3, 0], c[3, 3], c[3, 19] = 2, 3, 1
    # class 4: 4 correct, 4 predicted as class 5
    c[4, 4], c[4, 5] = 4, 4
    # class 5: absent from ground truth, predicted 4 times -> IoU 0
    # background ground truth: predicted as 0, 2, 3 and 19: none of it counts
    c[19, 0], c[19, 2], c[19, 3], c[19, 19] = 7, 4, 9, 6
    return c


HAND_IOU = {
    0: 5 / (5 + 2 + 4),  # TP 5, FP 2 (from class 3), FN 1 + 1 + 2
    1: 0.0,  # TP 0, FP 1, FN 0
    3: 3 / (3 + 1 + 3),  # TP 3, FP 1 (from class 0), FN 2 + 1
    4: 4 / (4 + 0 + 4),
    5: 0.0,
}


def test_class_iou_on_hand_made_matrix():
    iou = class_iou(hand_confusion(), 19)
    assert iou.shape == (19,)
    for s in range(19):
        if s in HAND_IOU:
            assert iou[s].item() == pytest.approx(HAND_IOU[s]), s
        else:
            assert math.isnan(iou[s].item()), s  # absent from prediction and ground truth (class 2 included)


def test_class_iou_ignores_background_ground_truth_in_false_positives():
    c = hand_confusion()
    c[19, :] = 0
    c[19, 0] = 1000
    assert class_iou(c, 19)[0].item() == pytest.approx(5 / 11)


def test_class_iou_predicting_background_is_a_false_negative():
    c = torch.zeros(20, 20, dtype=torch.int64)
    c[7, 7], c[7, 19] = 3, 5
    assert class_iou(c, 19)[7].item() == pytest.approx(3 / 8)


def test_class_iou_small_matrix_with_num_eval_classes():
    # K = 4, classes 0..2 evaluated, index 3 is background
    c = torch.tensor([[2, 1, 0, 1],
                      [1, 3, 0, 0],
                      [0, 0, 0, 0],
                      [5, 5, 5, 5]])
    iou = class_iou(c, num_eval_classes=3)
    assert iou.shape == (3,)
    assert iou[0].item() == pytest.approx(2 / (2 + 1 + 2))
    assert iou[1].item() == pytest.approx(3 / (3 + 1 + 1))
    assert math.isnan(iou[2].item())


def test_mean_iou_skips_nan_classes():
    expected = sum(HAND_IOU.values()) / len(HAND_IOU)
    assert mean_iou(hand_confusion(), 19) == pytest.approx(expected)


def test_the_evaluated_class_count_has_no_default():
    """The count comes from the data's class table (19 only for Cityscapes): a caller that forgets it fails."""
    c = torch.eye(4, dtype=torch.int64)
    with pytest.raises(TypeError):
        class_iou(c)
    with pytest.raises(TypeError):
        mean_iou(c)
    assert mean_iou(c, 3) == pytest.approx(1.0)


def test_mean_iou_all_absent_is_nan():
    c = torch.zeros(20, 20, dtype=torch.int64)
    c[19, 19] = 10
    assert math.isnan(mean_iou(c, 19))


def test_perfect_prediction_gives_iou_one():
    torch.manual_seed(2)
    target = torch.randint(0, 20, (2, 16, 16))
    conf = confusion_matrix(target, target, 20)
    assert mean_iou(conf, 19) == pytest.approx(1.0)


# --- PSNR (eq. 14), peak-to-peak 2 ---
def test_psnr_per_image_on_known_errors():
    x = torch.zeros(3, 3, 8, 8)
    rec = x.clone()
    rec[0] += 0.1  # MSE 0.01
    rec[1] -= 0.5  # MSE 0.25
    rec[2, :, :4] = 0.2  # half the values off by 0.2: MSE 0.02
    out = psnr_db(x, rec)
    assert out.shape == (3,)
    expected = [10 * math.log10(4 / 0.01), 10 * math.log10(4 / 0.25), 10 * math.log10(4 / 0.02)]
    assert out.tolist() == pytest.approx(expected, abs=1e-5)  # float32 inputs


def test_psnr_perfect_reconstruction_is_inf():
    x = torch.rand(1, 3, 8, 8)
    assert math.isinf(psnr_db(x, x.clone())[0].item())


def test_psnr_matches_numpy_on_random_images():
    torch.manual_seed(3)
    a, b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    mse = ((a.double().numpy() - b.double().numpy()) ** 2).reshape(2, -1).mean(1)
    np.testing.assert_allclose(psnr_db(a, b).numpy(), 10 * np.log10(4 / mse), rtol=1e-9)


# --- SNR (eq. 11) ---
def test_snr_per_image_on_known_signals():
    clean = torch.full((2, 20, 4, 4), 2.0, dtype=torch.float64)  # signal energy 320 * 4 = 1280
    noisy = clean.clone()
    noisy[0] += 0.2  # noise energy 320 * 0.04 = 12.8 -> 20 dB
    noisy[1, 3] = 0.0  # one class zeroed: noise energy 16 * 4 = 64 -> 10 log10(20) dB
    out = snr_db(clean, noisy)
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx([20.0, 10 * math.log10(20)], abs=1e-9)


def test_snr_sums_over_classes_and_pixels_not_mean_of_ratios():
    clean = torch.tensor([[[[1.0]], [[3.0]]]], dtype=torch.float64)  # (1, 2, 1, 1), energy 10
    noisy = torch.tensor([[[[2.0]], [[3.0]]]], dtype=torch.float64)  # noise energy 1 -> 10 dB
    assert snr_db(clean, noisy).item() == pytest.approx(10.0)
