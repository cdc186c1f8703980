"""No-decay parameter groups and MixUp/CutMix do what they say (the EMA option is tested with the task)."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.errors import ConfigurationError
from zoo.training.regularization import BatchMix, split_weight_decay


@pytest.mark.parametrize("name", ["resnet20", "convnext_tiny"])
def test_norms_biases_and_layer_scales_get_no_weight_decay(name):
    model = zoo.create(name, num_classes=10)
    groups = split_weight_decay([{"params": list(model.parameters()), "lr_factor": 0.5}], model)
    optimizer = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.05)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert all(g["lr_factor"] == 0.5 for g in optimizer.param_groups)  # other keys kept
    for pname, p in model.named_parameters():
        quiet = p.ndim == 1 or pname.endswith("layer_scale")
        assert decay_of[id(p)] == (0.0 if quiet else 0.05), pname
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    if name == "convnext_tiny":  # its layer scales are (C, 1, 1): caught by name, not by shape
        assert any(
            n.endswith("layer_scale") and p.ndim == 3 and decay_of[id(p)] == 0 for n, p in model.named_parameters()
        )


def test_mixup_mixes_two_images_and_their_labels():
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 4
    mixed, target = BatchMix(4, mixup_alpha=0.4)(x, y)
    assert target.shape == (8, 4) and torch.allclose(target.sum(1), torch.ones(8))
    # torchvision's MixUp pairs each image with the batch rolled by one: x' = lam x + (1 - lam) roll(x)
    lam = target[0, y[0]].item() if y[0] != y[-1] else None
    if lam is not None:
        torch.testing.assert_close(mixed[0], lam * x[0] + (1 - lam) * x[-1])
    assert not torch.equal(mixed, x)


def test_cutmix_pastes_a_box_and_weighs_labels_by_its_area():
    torch.manual_seed(1)
    x, y = torch.zeros(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    x[1:] = 1.0  # image 0 black, its partner (the batch rolled by one: image 3) white
    mixed, target = BatchMix(4, cutmix_alpha=1.0)(x, y)
    pasted = mixed[0].mean().item()  # the share of image 0 now white = the box's area
    assert target[0, 0].item() == pytest.approx(1 - pasted, abs=1e-6)
    assert target[0, 3].item() == pytest.approx(pasted, abs=1e-6)


def test_off_gives_one_hot_targets_and_bad_alphas_are_errors():
    mix = BatchMix(3)
    assert not mix
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([2, 0])
    out, target = mix(x, y)
    assert out is x and torch.equal(target, torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    with pytest.raises(ConfigurationError, match="mixup_alpha must be a number >= 0"):
        BatchMix(3, mixup_alpha=-1)


# ------------------------------------------------------------------ the task options


TASKS = {  # every task takes the same regularisation options
    "classification": ("ClassificationTask", "resnet20", {"num_classes": 10}),
    "segmentation": ("SegmentationTask", "unet_padded", {"model_args": {"depth": 2, "width": 4}}),
}


@pytest.mark.parametrize("kind", TASKS)
def test_task_option_no_decay_norms_and_biases(kind):
    from functools import partial

    import zoo.training

    cls_name, model, kwargs = TASKS[kind]
    cls = getattr(zoo.training, cls_name)
    optimizer = partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05)
    plain = cls(model, optimizer=optimizer, **kwargs).configure_optimizers()
    assert {g["weight_decay"] for g in plain.param_groups} == {0.05}  # off by default
    task = cls(model, optimizer=optimizer, no_decay_norms_and_biases=True, **kwargs)
    opt = task.configure_optimizers()
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay_of.keys() == {id(p) for p in task.parameters()}
    for name, p in task.named_parameters():
        assert decay_of[id(p)] == (0.0 if p.ndim == 1 else 0.05), name


def test_task_option_mixup_feeds_the_loss_mixed_targets(monkeypatch):
    from zoo.training import ClassificationTask

    torch.manual_seed(0)
    task = ClassificationTask("lenet5", num_classes=10, in_channels=1, mixup_alpha=0.4)
    assert task.mix and not ClassificationTask("lenet5", num_classes=10, in_channels=1).mix
    monkeypatch.setattr(task, "log", lambda *a, **k: None)
    x, y = torch.rand(8, 1, 32, 32), torch.arange(8) % 10
    seen = {}
    mix = task.mix

    def spy(images, labels):
        seen["x"], seen["target"] = mix(images, labels)
        return seen["x"], seen["target"]

    monkeypatch.setattr(task, "mix", spy)
    loss = task.training_step((x, y), 0)
    expected = torch.nn.functional.cross_entropy(task(seen["x"]), seen["target"])
    torch.testing.assert_close(loss, expected)
    assert not torch.equal(seen["x"], x) and seen["target"].shape == (8, 10)


def test_task_option_ema_evaluates_and_saves_the_averaged_weights(tmp_path):
    import lightning as L

    from zoo.training import ClassificationTask, DigitsDataModule
    from zoo.training.checkpoint import read_checkpoint

    torch.manual_seed(0)
    task = ClassificationTask("lenet5", num_classes=10, in_channels=1, ema_decay=0.9)
    seen = []

    class Probe(L.Callback):
        """Keeps its own EMA of the raw weights after every step; at validation, the module must hold it."""

        average: dict | None = None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            raw = {n: p.detach().clone() for n, p in module.named_parameters()}
            if self.average is None:  # AveragedModel's first update copies
                self.average = raw
            else:
                self.average = {n: 0.9 * self.average[n] + 0.1 * raw[n] for n in raw}
            self.raw = raw

        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            if self.average is None:  # the sanity check, before any step
                return
            now = dict(module.named_parameters())
            seen.append(all(torch.allclose(now[n], self.average[n], atol=1e-6) for n in now))
            seen.append(any(not torch.equal(now[n], self.raw[n]) for n in now))

    dm = DigitsDataModule(batch_size=64)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=5,
        limit_val_batches=1,
        default_root_dir=tmp_path,
        callbacks=[Probe(), L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="last")],
        logger=False,
        enable_progress_bar=False,
    )
    trainer.fit(task, dm)
    assert seen == [True, True]  # validation ran on the averaged weights, which differ from the raw ones
    ckpt = read_checkpoint(tmp_path / "last.ckpt")  # zoo's safe reader takes the EMA checkpoint
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged if averaged[k].is_floating_point())
