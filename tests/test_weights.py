"""Weight import from torchvision (strict key maps, same outputs) and safe loading of weight files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
import torchvision

import zoo
from zoo.errors import WeightsError
from zoo.weights import import_weights, load_file

TORCHVISION_SHARED = ["alexnet", *zoo.list_models("vgg*")]


@pytest.mark.parametrize("name", TORCHVISION_SHARED)
def test_torchvision_weights_give_the_same_outputs(name):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)().eval()
    ours = import_weights(zoo.create(name), theirs).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = (ours(x) - theirs(x)).abs().max().item()
    assert diff <= 1e-5, f"{name}: max abs diff {diff}"


def test_vgg16_at_224_and_other_channels_and_classes():
    torch.manual_seed(0)
    theirs = torchvision.models.vgg16_bn(num_classes=10).eval()
    ours = import_weights(zoo.create("vgg16_bn", num_classes=10), theirs).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


def test_mismatched_weights_are_listed_by_name():
    theirs = torchvision.models.vgg11()
    with pytest.raises(WeightsError, match=r"do not fit vgg13: .*missing key\(s\): stages.0.1.conv"):
        import_weights(zoo.create("vgg13"), theirs)
    with pytest.raises(WeightsError, match=r"mismatch.*classifier.6.weight \(1000, 4096\) -> fc.weight \(10, 4096\)"):
        import_weights(zoo.create("vgg11", num_classes=10), theirs)
    state = theirs.state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"1 unexpected key\(s\): extra.weight"):
        import_weights(zoo.create("vgg11"), state)


def test_model_without_counterpart():
    with pytest.raises(WeightsError, match="lenet5 has no torchvision counterpart"):
        import_weights(zoo.create("lenet5"), {})


def test_create_with_weights_file_in_zoo_and_torchvision_layout(tmp_path):
    torch.manual_seed(0)
    source = zoo.create("alexnet", num_classes=5)
    torch.save(source.state_dict(), tmp_path / "zoo.pt")
    loaded = zoo.create("alexnet", num_classes=5, weights=tmp_path / "zoo.pt")
    pairs = zip(source.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)

    tv = torchvision.models.alexnet(num_classes=5)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    loaded = zoo.create("alexnet", num_classes=5, weights=str(tmp_path / "tv.pth")).eval()
    x = torch.randn(1, 3, 63, 63)
    with torch.no_grad():
        assert (loaded(x) - tv.eval()(x)).abs().max() <= 1e-5

    from safetensors.torch import save_file

    save_file(source.state_dict(), str(tmp_path / "zoo.safetensors"))
    loaded = zoo.create("alexnet", num_classes=5, weights=tmp_path / "zoo.safetensors")
    assert torch.equal(loaded.fc.weight, source.fc.weight)


def test_missing_weights_file_says_where(tmp_path):
    with pytest.raises(WeightsError, match="weights file '.*nowhere.pt' does not exist"):
        zoo.create("alexnet", weights=tmp_path / "nowhere.pt")


def test_torchvision_weights_are_looked_up_in_the_hub_cache_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(WeightsError, match=r"no torchvision weights for vgg11 on disk: looked for .*vgg11-.*\.pth"):
            zoo.create("vgg11", weights="torchvision")
        # put a file where torchvision keeps it: it is found and loaded
        url = torchvision.models.get_model_weights("vgg11").DEFAULT.url
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        tv = torchvision.models.vgg11()
        torch.save(tv.state_dict(), tmp_path / "hub" / "checkpoints" / os.path.basename(url))
        ours = zoo.create("vgg11", weights="torchvision")
        assert torch.equal(ours.fc.weight, tv.classifier[6].weight)
    finally:
        torch.hub.set_dir(os.path.join(torch.hub._get_torch_home(), "hub"))
    with pytest.raises(WeightsError, match="lenet5 has no torchvision weights"):
        zoo.create("lenet5", weights="torchvision")


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    with open(bad, "wb") as f:
        pickle.dump({"weight": _Exploit(str(marker))}, f)
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_file(bad)
    assert not marker.exists()


def test_truncated_and_non_state_dict_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(zoo.create("lenet5").state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(WeightsError, match="cannot read weights from .*truncated.pt.*corrupt, truncated"):
        zoo.create("lenet5", weights=truncated)
    torch.save({"a": 1}, tmp_path / "notensors.pt")
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        load_file(tmp_path / "notensors.pt")


def test_checkpoint_of_another_architecture_or_class_count(tmp_path):
    torch.save(zoo.create("lenet5").state_dict(), tmp_path / "lenet.pt")
    with pytest.raises(WeightsError, match="do not fit lenet5_1998"):
        zoo.create("lenet5_1998", weights=tmp_path / "lenet.pt")
    with pytest.raises(WeightsError, match=r"shape mismatch.*fc.weight \(10, 84\) -> fc.weight \(3, 84\)"):
        zoo.create("lenet5", num_classes=3, weights=tmp_path / "lenet.pt")


def test_export_a_training_checkpoint_as_safetensors(tmp_path):
    """`zoo export` turns a Lightning checkpoint of `zoo fit` into a safetensors file that create() loads."""
    from zoo.cli import main

    torch.manual_seed(0)
    net = zoo.create("resnet20")
    ckpt = {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}
    torch.save(ckpt, tmp_path / "best.ckpt")
    assert main(["export", str(tmp_path / "best.ckpt"), str(tmp_path / "resnet20.safetensors")]) == 0
    loaded = zoo.create("resnet20", weights=tmp_path / "resnet20.safetensors")
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
