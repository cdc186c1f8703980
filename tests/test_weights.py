"""Weight import from torchvision (strict key maps, same outputs) and safe loading of weight files."""

from __future__ import annotations

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


def test_checkpoint_of_another_architecture_or_class_count(tmp_path, caplog):
    source = zoo.create("lenet5")
    torch.save(source.state_dict(), tmp_path / "lenet.pt")
    with pytest.raises(WeightsError, match="do not fit lenet5_1998: the closest layout, zoo's, differs by"):
        zoo.create("lenet5_1998", weights=tmp_path / "lenet.pt")
    # another class count: the backbone loads, the classifier starts fresh, one log line says so
    with caplog.at_level("WARNING", logger="zoo"):
        loaded = zoo.create("lenet5", num_classes=3, weights=tmp_path / "lenet.pt")
    assert "the classifier (fc) starts fresh for 3 classes (the weights have 10)" in caplog.text
    assert loaded.fc.weight.shape == (3, 84)
    mine, theirs = loaded.state_dict(), source.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs if not k.startswith("fc."))


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


# --------------------------------------------------------------------------- fine-tuning: head and stem


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    path = tmp_path_factory.mktemp("r18") / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


def test_torchvision_resnet_file_loads_by_name(resnet18_file):
    """The README's example: torchvision's file for resnet18 loads with create(weights=FILE)."""
    tv, path = resnet18_file
    ours = zoo.create("resnet18", weights=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - tv(x)).abs().max() <= 1e-5
    assert ours.pretrained_cfg is None  # a plain file says nothing about its preprocessing


def test_another_num_classes_keeps_the_backbone_and_starts_a_fresh_head(resnet18_file, caplog):
    tv, path = resnet18_file
    with caplog.at_level("WARNING", logger="zoo"):
        ours = zoo.create("resnet18", weights=path, num_classes=2).eval()
    assert caplog.text.count("starts fresh for 2 classes (the weights have 1000)") == 1
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = torch.flatten(
            tv.avgpool(tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))), 1
        )
        assert (ours.forward_head(ours.forward_features(x), pre_logits=True) - features).abs().max() <= 1e-5
    assert ours(x).shape == (2, 2)
    pooled = zoo.create("resnet18", weights=path, num_classes=0).eval()  # features only: the head is left out
    with torch.no_grad():
        assert (pooled(x) - features).abs().max() <= 1e-5


def test_one_input_channel_sums_the_rgb_filters(resnet18_file, caplog):
    """A grey image x through the adapted network gives what the RGB network gives for (x, x, x)."""
    tv, path = resnet18_file
    with caplog.at_level("WARNING", logger="zoo"):
        grey = zoo.create("resnet18", weights=path, in_channels=1).eval()
    assert "the first conv (stages.0.stem.conv) summed from 3 input channels" in caplog.text
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert (grey(x) - tv(x.expand(-1, 3, -1, -1))).abs().max() <= 1e-4
    four = zoo.create("resnet18", weights=path, in_channels=4)
    w = tv.conv1.weight
    assert torch.allclose(four.stages[0].stem.conv.weight, torch.cat([w, w[:, :1]], 1) * 3 / 4)


def test_u_net_on_an_encoder_takes_the_classifiers_file(resnet18_file, caplog):
    tv, path = resnet18_file
    with caplog.at_level("WARNING", logger="zoo"):
        unet = zoo.create("unet_resnet18", weights=path)
    assert "into its encoder; the decoder starts fresh" in caplog.text
    assert torch.equal(unet.encoder.stages[0].stem.conv.weight, tv.conv1.weight)


def test_a_file_one_key_short_names_that_key(resnet18_file, tmp_path):
    tv, _ = resnet18_file
    state = tv.state_dict()
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(WeightsError, match=r"closest layout, torchvision's, differs by 1 missing key\(s\): "
                       r"stages.1.0.conv1.conv.weight \(<- layer1.0.conv1.weight\)\. "):  # fmt: skip
        zoo.create("resnet18", weights=tmp_path / "short.pth")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (123, r"weights must be a file path, a URL or a source name .*got 123"),
        ("torchvision:NOPE", r"torchvision has no weights 'NOPE' for resnet18; it has IMAGENET1K_V1"),
        ("timm:nope", r"timm has no weights 'nope' for resnet18; it has a1_in1k, "),
        ("zoo", r"no zoo weights for resnet18: none are published yet"),
    ],
)
def test_weights_argument_errors(weights, message):
    with pytest.raises(WeightsError, match=message):
        zoo.create("resnet18", weights=weights)


def test_a_folder_is_not_a_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="is a folder; pass the weights file inside it"):
        zoo.create("lenet5", weights=tmp_path)


def test_a_model_without_the_source(tmp_path):
    with pytest.raises(
        WeightsError, match="lenet5 has no torchvision counterpart, so there are no torchvision weights"
    ):
        zoo.create("lenet5", weights="torchvision")
    with pytest.raises(WeightsError, match="convnext_xlarge has no torchvision counterpart.*it has timm weights"):
        zoo.create("convnext_xlarge", weights="torchvision")


def test_export_a_run_with_a_card_that_create_reads(tmp_path, monkeypatch):
    """`zoo export RUN --name NAME`: NAME.safetensors and NAME.json (model, recipe, data, metrics, sha256)."""
    import hashlib
    import json

    import yaml

    from zoo.cli import main

    run = tmp_path / "runs" / "lenet5_digits" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    net = zoo.create("lenet5")
    hparams = {"model": "lenet5", "num_classes": 10, "in_channels": 1, "model_args": None}
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 29}, run / "checkpoints" / "best.ckpt")
    config = {"trainer": {"logger": {"init_args": {"name": "lenet5_digits"}}}, "data": {"class_path": "Digits"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.json").write_text(json.dumps({"test/acc": 0.98, "model": "lenet5"}))
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(run), "--name", "lenet5-digits"]) == 0
    card = json.loads((tmp_path / "lenet5-digits.json").read_text())
    digest = hashlib.sha256((tmp_path / "lenet5-digits.safetensors").read_bytes()).hexdigest()
    assert card["sha256"] == digest and card["model"] == "lenet5" and card["recipe"] == "lenet5_digits"
    assert card["metrics"] == {"test/acc": 0.98} and card["epochs_trained"] == 29
    loaded = zoo.create("lenet5", weights="lenet5-digits.safetensors")
    assert torch.equal(loaded.fc.weight, net.fc.weight)
    assert loaded.pretrained_cfg["recipe"] == "lenet5_digits" and loaded.pretrained_cfg["source"] == "file"
    assert main(["export", str(tmp_path)]) == 2  # neither an output nor --name; and not a run folder


def test_a_text_file_is_not_weights(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(WeightsError, match=r"cannot read weights from .*notes.txt': it is not a torch or safetensors"):
        zoo.create("lenet5", weights=tmp_path / "notes.txt")


def test_a_fresh_head_never_hides_a_missing_backbone_tensor(resnet18_file, tmp_path, caplog):
    """Only the classifier may start fresh: a missing conv with as many channels as classes is still an error."""
    tv, _ = resnet18_file
    state = tv.state_dict()
    del state["layer1.0.conv1.weight"]  # (64, 64, 3, 3): 64 outputs, like a 64-class head
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(WeightsError, match=r"1 missing key\(s\): stages.1.0.conv1.conv.weight"):
        zoo.create("resnet18", weights=tmp_path / "short.pth", num_classes=64)
    headless = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}  # timm's feature-only tags
    torch.save(headless, tmp_path / "headless.pth")
    with caplog.at_level("WARNING", logger="zoo"):
        model = zoo.create("resnet18", weights=tmp_path / "headless.pth", num_classes=3)
    assert "starts fresh for 3 classes (the weights have no classifier)" in caplog.text
    assert torch.equal(model.stages[0].stem.conv.weight, tv.conv1.weight)
