"""The Lightning tasks' options, checked on the tasks directly: test-time augmentation, torch.compile, the Dice loss."""

from __future__ import annotations

import shutil

import pytest
import torch

from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.training import ClassificationTask, SegmentationTask
from zoo.training.tasks import soft_dice_loss


def test_classification_tta_is_the_mean_over_the_mirror_image() -> None:
    torch.manual_seed(0)
    task = ClassificationTask("lenet5", num_classes=10, in_channels=1, tta=True).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        expected = (task.net(x) + task.net(x.flip(-1))) / 2
        assert torch.allclose(task.logits(x, tta=True), expected, atol=1e-6)
        assert not torch.allclose(task.logits(x, tta=True), task.net(x), atol=1e-4)
        symmetric = x + x.flip(-1)  # a mirror-symmetric image: both views agree
        assert torch.allclose(task.logits(symmetric, tta=True), task.net(symmetric), atol=1e-5)


@pytest.mark.parametrize("overlap_tile", [False, True])
def test_segmentation_tta_averages_all_eight_views(overlap_tile: bool) -> None:
    # averaged over every flip and quarter turn, the prediction turns with the image (which a
    # wrongly undone view would break), and it is a log-probability
    torch.manual_seed(0)
    small = {"depth": 2, "width": 4}
    task = SegmentationTask(
        "unet_padded", model_args=small, num_classes=2, in_channels=1, tta=True, overlap_tile=overlap_tile
    ).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        out = task.predict_whole(x, tta=True)
        turned = task.predict_whole(torch.rot90(x, 1, (-2, -1)), tta=True)
        mirrored = task.predict_whole(x.flip(-1), tta=True)
        plain = task.predict_whole(x)
    assert out.shape == plain.shape == (1, 2, 32, 32)
    assert torch.allclose(out.exp().sum(1), torch.ones(1, 32, 32), atol=1e-5)
    assert torch.allclose(turned, torch.rot90(out, 1, (-2, -1)), atol=1e-5)
    assert torch.allclose(mirrored, out.flip(-1), atol=1e-5)
    assert not torch.allclose(out, plain.log_softmax(1), atol=1e-4)  # the network alone is not equivariant


@pytest.mark.skipif(not shutil.which("g++") and not shutil.which("c++"), reason="torch.compile needs a C++ compiler")
def test_compiled_task_matches_eager_and_keeps_checkpoint_keys() -> None:
    torch.manual_seed(0)
    eager = ClassificationTask("lenet5", num_classes=10, in_channels=1)
    compiled = ClassificationTask("lenet5", num_classes=10, in_channels=1, compile=True)
    compiled.load_state_dict(eager.state_dict())
    assert list(compiled.state_dict()) == list(eager.state_dict())
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(compiled(x), eager(x), atol=1e-5)
    # the input checks still give their one-line error under compile
    with pytest.raises(InputShapeError, match="takes exactly 32x32 inputs"):
        compiled(torch.randn(1, 1, 8, 8))


def test_soft_dice_loss_is_small_for_a_right_prediction_and_large_for_a_wrong_one() -> None:
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:12, 4:12] = 1
    onehot = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float()
    right, wrong = soft_dice_loss(20 * onehot, target), soft_dice_loss(20 * (1 - onehot), target)
    assert 0 <= right < 0.01 and wrong > 0.99
    # the mean over the classes: a missed small class costs as much as a missed large one
    half = onehot.clone()
    half[:, :, 4:12, 4:12] = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)  # every pixel called class 0
    assert 0.4 < soft_dice_loss(20 * half, target) < 0.6


def test_dice_weight_adds_the_dice_loss_to_the_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
    plain = SegmentationTask("unet_padded", model_args={"depth": 2, "width": 4})
    weighted = SegmentationTask("unet_padded", model_args={"depth": 2, "width": 4}, dice_weight=0.5)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(plain._loss(logits, y), ce)
    assert torch.allclose(weighted._loss(logits, y), ce + 0.5 * soft_dice_loss(logits, y))
    with pytest.raises(InvalidArgumentError, match="dice_weight must be >= 0"):
        SegmentationTask("unet_padded", model_args={"depth": 2, "width": 4}, dice_weight=-1)


@pytest.mark.parametrize("task", [ClassificationTask, SegmentationTask])
def test_tasks_take_keyword_arguments_after_the_model(task: type) -> None:
    # a positional model_args (or any other option) is a TypeError, not a silent misreading
    with pytest.raises(TypeError, match="positional argument"):
        task("lenet5", {"drop_rate": 0.1})
    assert task.__init__.__kwdefaults__ and "model_args" in task.__init__.__kwdefaults__


def test_segmentation_logs_each_class_iou_by_the_data_modules_class_names(tmp_path) -> None:
    # test/iou_<class> for every class, equal to the IoU of the saved predictions, and their mean is test/iou
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x = torch.randn(6, 1, 16, 16)
    y = (x > 0.3).long()[:, 0]  # learnable, unbalanced classes

    class Blobs(L.LightningDataModule):
        classes = ("background", "blob")

        def train_dataloader(self):
            return DataLoader(TensorDataset(x, y), batch_size=3)

        val_dataloader = test_dataloader = train_dataloader

    small = {"depth": 2, "width": 4}
    task = SegmentationTask("unet_padded", model_args=small, ema_decay=0.5)
    trainer = L.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    trainer.fit(task, Blobs())
    assert {"val/iou_background", "val/iou_blob"} <= set(trainer.callback_metrics)
    (metrics,) = trainer.test(task, Blobs(), ckpt_path=None, verbose=False)
    with torch.no_grad():
        pred = task.eval().predict_whole(x).argmax(1)
    expected = []
    for k in (0, 1):
        inter = ((pred == k) & (y == k)).sum().item()
        union = ((pred == k) | (y == k)).sum().item()
        expected.append(inter / union)
    assert metrics["test/iou_background"] == pytest.approx(expected[0], abs=1e-5)
    assert metrics["test/iou_blob"] == pytest.approx(expected[1], abs=1e-5)
    assert metrics["test/iou"] == pytest.approx(sum(expected) / 2, abs=1e-5)
    assert expected[0] != expected[1]
