"""A plain PyTorch training loop for LeNet-5 on MNIST: the yardstick for the Lightning recipe.

``python benchmarks/plain_loop.py --root ../shared/data`` does what
``zoo fit --config recipes/lenet5_mnist.yaml --data.root ../shared/data`` does, without
Lightning: the same network, data (MNIST padded to 32x32, the same held-out validation
images, random shifts of up to 2 pixels), batch size, optimizer, one-cycle schedule and
number of epochs; one validation pass per epoch, the test set at the end. It prints the
test accuracy and the wall time, so that the recipe's overhead can be read as a ratio.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import zoo
from zoo.training.data import MNISTDataModule, channel_stats, random_crop


def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), 1000):
            logits = model(torch.addcmul(shift, x[i : i + 1000].float(), scale))
            correct += int((logits.argmax(1) == y[i : i + 1000]).sum())
    model.train()
    return correct / len(x)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(prog="python benchmarks/plain_loop.py", description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data", help="the folder that holds MNIST/ (e.g. ../shared/data)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--max-lr", type=float, default=0.1)
    p.add_argument("--val-size", type=int, default=5000, help="training images held out (as in the recipe)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    splits = MNISTDataModule(args.root, pad=2, val_size=args.val_size).load_splits()  # the recipe's tensors
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits["train"], splits["val"], splits["test"]
    mean, std = channel_stats(train_x)
    scale = torch.tensor([1 / (255 * s) for s in std]).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, -1, 1, 1)

    model = zoo.create("lenet5", num_classes=10, in_channels=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = len(train_x) // args.batch_size  # the last, partial batch is dropped
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.max_lr, total_steps=steps_per_epoch * args.epochs)
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_x))
        for i in range(steps_per_epoch):
            index = order[i * args.batch_size : (i + 1) * args.batch_size]
            x = torch.addcmul(shift, random_crop(train_x[index], 2).float(), scale)
            loss = F.cross_entropy(model(x), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        val_acc = evaluate(model, val_x, val_y, scale, shift)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}  val acc {val_acc:.4f}", flush=True)
    test_acc = evaluate(model, test_x, test_y, scale, shift)
    wall = time.perf_counter() - start
    print(f"baseline: lenet5 on MNIST, {args.epochs} epochs: test acc {test_acc:.4f}  (wall {wall:.1f} s)")
    return test_acc


if __name__ == "__main__":
    main()
