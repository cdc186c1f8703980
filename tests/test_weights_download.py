"""Pretrained weights on request: torch.hub's and huggingface_hub's machinery, a local server, prepared caches.

Nothing here reaches the internet: a state dict is served from 127.0.0.1, or put where the
libraries' caches keep it; ``ZOO_OFFLINE=1`` turns downloads off.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import timm
import torch
import torchvision

import zoo
from zoo import registry
from zoo.errors import WeightsError
from zoo.registry import PublishedWeights
from zoo.weights import save_file

TV_URL = torchvision.models.get_model_weights("resnet18").DEFAULT.url  # .../resnet18-f37072fd.pth


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty torch.hub and Hugging Face caches of this test's own, downloads allowed."""
    import huggingface_hub.constants

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for variable in ("ZOO_OFFLINE", "HF_HUB_OFFLINE", "ZOO_TORCHVISION_MIRROR"):
        monkeypatch.delenv(variable, raising=False)
    yield tmp_path
    torch.hub.set_dir(old)


@pytest.fixture
def server(tmp_path):
    """A local HTTP server for the folder it returns (and its base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _reference_resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def _same_outputs(ours: torch.nn.Module, theirs: torch.nn.Module) -> bool:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        return (ours.eval()(x) - theirs(x)).abs().max().item() <= 1e-5


def test_torchvision_weights_from_a_prepared_cache(caches, monkeypatch):
    tv = _reference_resnet18()
    cached = caches / "hub" / "checkpoints" / Path(TV_URL).name
    cached.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), cached)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    ours = zoo.create("resnet18", weights="torchvision")
    assert _same_outputs(ours, tv)
    cfg = ours.pretrained_cfg
    assert (cfg["source"], cfg["tag"], cfg["file"]) == ("torchvision", "IMAGENET1K_V1", str(cached))
    assert (cfg["crop_size"], cfg["resize_size"], cfg["interpolation"]) == (224, 256, "bilinear")
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406)) and cfg["accuracy"]["top1"] == pytest.approx(69.758)
    assert len(cfg["categories"]) == 1000 and cfg["categories"][0] == "tench"
    assert zoo.create("resnet18", weights="torchvision:IMAGENET1K_V1").pretrained_cfg["tag"] == "IMAGENET1K_V1"


def test_torchvision_weights_offline_without_a_cache_say_what_to_fetch_and_where(caches, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    where = caches / "hub" / "checkpoints" / Path(TV_URL).name
    with pytest.raises(WeightsError) as error:
        zoo.create("resnet18", weights="torchvision")
    message = str(error.value)
    assert "\n" not in message and f"fetch {TV_URL} into {where}" in message


def test_no_network_is_one_line_too(caches, server):
    _, base = server
    with pytest.raises(WeightsError, match=r"cannot download the weights at .*missing-0123abcd.pth .*yourself"):
        zoo.create("resnet18", weights=f"{base}/missing-0123abcd.pth")  # the server answers 404
    with socket.socket() as s:  # a port nobody listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WeightsError, match=r"cannot download .*refused.*; fetch .* into .* yourself"):
        zoo.create("resnet18", weights=f"http://127.0.0.1:{port}/resnet18-0123abcd.pth")


def test_a_download_that_fails_its_hash_is_not_kept(caches, server, monkeypatch):
    """torchvision's file name carries its sha256 prefix: a file served under it with other bytes is refused."""
    folder, base = server
    torch.save(_reference_resnet18().state_dict(), folder / Path(TV_URL).name)
    monkeypatch.setenv("ZOO_TORCHVISION_MIRROR", base)
    with pytest.raises(WeightsError, match=r"does not match its sha256 f37072fd, so it was not kept"):
        zoo.create("resnet18", weights="torchvision")
    assert not (caches / "hub" / "checkpoints" / Path(TV_URL).name).exists()


def test_a_url_downloads_checks_and_loads(caches, server):
    folder, base = server
    tv = _reference_resnet18()
    staged = folder / "staged.pth"
    torch.save(tv.state_dict(), staged)
    digest = hashlib.sha256(staged.read_bytes()).hexdigest()
    staged.rename(folder / f"resnet18-{digest[:8]}.pth")  # torchvision's naming: the hash prefix in the name
    url = f"{base}/resnet18-{digest[:8]}.pth"
    ours = zoo.create("resnet18", weights=url)
    assert _same_outputs(ours, tv)
    assert (caches / "hub" / "checkpoints" / f"resnet18-{digest[:8]}.pth").is_file()
    (folder / f"resnet18-{digest[:8]}.pth").unlink()  # the second time it comes from the cache
    assert _same_outputs(zoo.create("resnet18", weights=url), tv)


def test_zoo_published_weights_are_fetched_by_tag_and_checked(caches, server, monkeypatch):
    folder, base = server
    source = zoo.create("lenet5")
    save_file(source, folder / "lenet5-digits.safetensors")
    digest = hashlib.sha256((folder / "lenet5-digits.safetensors").read_bytes()).hexdigest()
    entry = registry._REGISTRY["lenet5"]
    published = PublishedWeights("digits", f"{base}/lenet5-digits.safetensors", digest, {"mean": [0.5], "std": [0.5]})
    card = dataclasses.replace(entry.card, weights=(published,))
    monkeypatch.setitem(registry._REGISTRY, "lenet5", dataclasses.replace(entry, card=card))
    loaded = zoo.create("lenet5", weights="zoo:digits")
    assert torch.equal(loaded.fc.weight, source.fc.weight)
    assert loaded.pretrained_cfg["mean"] == [0.5] and loaded.pretrained_cfg["source"] == "zoo"
    with pytest.raises(WeightsError, match="no zoo weights other for lenet5: it has digits"):
        zoo.create("lenet5", weights="zoo:other")
    # a published file whose bytes changed is refused
    (caches / "hub" / "checkpoints" / "lenet5-digits.safetensors").unlink()
    torch.manual_seed(1)
    save_file(zoo.create("lenet5"), folder / "lenet5-digits.safetensors")
    with pytest.raises(WeightsError, match="does not match its sha256"):
        zoo.create("lenet5", weights="zoo")


def _hf_cache(root: Path, repo: str, state: dict) -> Path:
    """Lay out a file as huggingface_hub keeps it: refs/main names a snapshot that holds the file."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return save_file(state, snapshot / "model.safetensors")


def test_timm_weights_from_a_prepared_hugging_face_cache(caches, monkeypatch):
    torch.manual_seed(0)
    reference = timm.create_model("resnet18").eval()
    cfg = timm.models.get_pretrained_cfg("resnet18")
    _hf_cache(caches / "hf", cfg.hf_hub_id, reference.state_dict())
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    ours = zoo.create("resnet18", weights="timm")
    assert _same_outputs(ours, reference)
    info = ours.pretrained_cfg
    assert (info["source"], info["tag"], info["interpolation"]) == ("timm", cfg.tag, cfg.interpolation)
    assert info["crop_size"] == cfg.input_size[-1] and info["resize_size"] == int(cfg.input_size[-1] / cfg.crop_pct)


def test_timm_weights_offline_without_a_cache(caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = timm.models.get_pretrained_cfg("convnext_tiny.fb_in22k").hf_hub_id
    with pytest.raises(WeightsError) as error:
        zoo.create("convnext_tiny", weights="timm:fb_in22k")
    message = str(error.value)
    assert "\n" not in message and f"`hf download {hub_id}`" in message and str(caches / "hf") in message


def test_googlenet_from_torchvision_sets_transform_input_as_torchvision_does(caches, monkeypatch):
    torch.manual_seed(0)
    tv = torchvision.models.googlenet(aux_logits=True, init_weights=False, transform_input=True).eval()
    url = torchvision.models.get_model_weights("googlenet").DEFAULT.url
    cached = caches / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), cached)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    ours = zoo.create("googlenet_tv", weights="torchvision")
    assert ours.transform_input
    assert _same_outputs(ours, tv)
