"""LeNet-5: LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proceedings of the IEEE 1998, http://yann.lecun.com/exdb/publis/pdf/lecun-01a.pdf

Two networks:

`lenet5` is the common modern form taught today: on a 32x32 input, conv 5x5 (6) ->
pool -> conv 5x5 (16) -> pool -> 120 -> 84 -> classes, every conv seeing every input
map, ReLU and max pooling by default (pass ``act_layer=nn.Tanh, pool_layer=nn.AvgPool2d``
for the older look), a plain linear classifier: 61,706 parameters for 10 classes. Its
C5 is a linear layer on the flattened 16x5x5 map, which is the same as the paper's 5x5
conv at 32x32. ``input_size`` adapts it to other square inputs (28 for unpadded MNIST).

`lenet5_1998` is the paper's own network, 60,000 trainable parameters:
- C1: 6 maps, 5x5 conv (156 parameters);
- S2 and S4: subsampling, the sum of each 2x2 window times one trainable coefficient
  plus one trainable bias per map, then the squashing function (12 and 32 parameters);
- C3: 16 maps, 5x5 conv, each map connected to a subset of S2's maps by the paper's
  Table I (6 maps see 3 inputs, 9 see 4, 1 sees all 6: 1,516 parameters);
- C5: 120 maps, 5x5 conv (48,120); F6: 84 units (10,164);
- the squashing function f(a) = 1.7159 tanh(2a/3) after every layer up to F6;
- weights initialised uniformly in +-2.4 / fan-in, as the paper's Appendix A.

What is left out or changed: the output layer keeps the paper's Euclidean RBF units
(y_i = sum_j (x_j - w_ij)^2, with fixed, untrained centres), but the centres are a fixed
random +-1 code (seed 0) instead of the paper's hand-drawn 7x12 character bitmaps, and
the network returns -y_i as logits so that the usual cross-entropy applies; the paper's
MAP training criterion and its stochastic diagonal Levenberg-Marquardt optimiser are not
reproduced. The input is expected normalised (the paper maps background to -0.1 and
foreground to 1.175).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zoo.arithmetic import LayerGeometry, module_chain, output_sizes
from zoo.checks import check_int
from zoo.errors import ConfigurationError
from zoo.layers import ConvNormAct, LayerFactory, make_act
from zoo.models.base import WeightInit, ZooClassifier, fan_in_uniform
from zoo.registry import Paper, Variant, register_model

PAPER = Paper(
    "Gradient-Based Learning Applied to Document Recognition",
    1998,
    "http://yann.lecun.com/exdb/publis/pdf/lecun-01a.pdf",
    "Y. LeCun, L. Bottou, Y. Bengio, P. Haffner",
)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


@dataclass(frozen=True)
class LeNetConfig:
    """Widths of C1 and C3 and of the two hidden layers (C5, F6)."""

    widths: tuple[int, int] = (6, 16)
    hidden: tuple[int, int] = (120, 84)


@register_model(
    family="lenet",
    paper=PAPER,
    input_size=(1, 32, 32),
    min_input_size=(32, 32),
    mean=MNIST_MEAN,
    std=MNIST_STD,
    num_classes=10,
    variants={
        "lenet5": Variant(
            LeNetConfig(),
            61_706,
            "the common modern form (e.g. the PyTorch tutorial's LeNet, d2l.ai)",
            notes="takes exactly input_size x input_size (default 32; 16 or more via input_size=...)",
        )
    },
)
class LeNet5(ZooClassifier):
    """LeNet-5 in its common modern form.

    Args:
        config: layer widths (see `LeNetConfig`).
        in_channels: input image channels.
        num_classes: output classes; 0 returns the 84-d F6 features.
        input_size: the square input size the classifier is built for (at least 16).
        act_layer: activation after every conv and hidden linear layer.
        pool_layer: the 2x2 subsampling layer class, called with (kernel_size, stride).
    """

    def __init__(
        self,
        config: LeNetConfig,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 32,
        act_layer: LayerFactory = nn.ReLU,
        pool_layer: LayerFactory = nn.MaxPool2d,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "lenet5")
        check_int(input_size, "input_size", "lenet5")
        c1, c3 = config.widths
        f5, f6 = config.hidden
        self.stages = nn.ModuleList(
            [
                nn.Sequential(ConvNormAct(in_channels, c1, 5, padding=0, norm_layer=None, act_layer=act_layer)),
                nn.Sequential(
                    pool_layer(2, 2), ConvNormAct(c1, c3, 5, padding=0, norm_layer=None, act_layer=act_layer)
                ),
            ]
        )
        self.stage_channels = (c1, c3)
        self.stage_strides = (1, 2)
        self.head_pool = pool_layer(2, 2)
        side = _final_side(self, input_size, "lenet5")
        self.fixed_input_size = (input_size, input_size)
        self.num_features = f6
        self.pre_logits = nn.Sequential(
            nn.Linear(c3 * side * side, f5),  # C5: a 5x5 conv on a 5x5 map, written as a linear layer
            make_act(act_layer),
            nn.Linear(f5, f6),
            make_act(act_layer),
        )
        self.reset_classifier(num_classes)

    def head_features(self, x: Tensor) -> Tensor:
        return self.pre_logits(self.head_pool(x).flatten(1))  # (B, 84)


def _final_side(model: nn.Module, input_size: int, name: str) -> int:
    """The side of the last pooled map for a square input, or a clear error if the input is too small."""
    chain = module_chain(model.named_modules())
    side = 1
    while True:  # the smallest input the chain takes, for the message
        try:
            output_sizes(chain, (side, side))
            break
        except ConfigurationError:
            side += 1
    if input_size < side:
        raise ConfigurationError(f"{name}: input_size must be at least {side}, got {input_size}")
    return output_sizes(chain, (input_size, input_size))[-1][0]


# ------------------------------------------------------------------------ the 1998 network

#: Table I of the paper: which S2 maps (0-5) each C3 map (0-15) reads.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


class ScaledTanh(nn.Module):
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2 / 3) -> None:
        super().__init__()
        self.amplitude, self.slope = amplitude, slope

    def forward(self, x: Tensor) -> Tensor:
        return self.amplitude * torch.tanh(self.slope * x)


class Subsampling(nn.Module):
    """S2/S4: each map's 2x2 window sum times a trainable coefficient, plus a trainable bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(x) * 4  # window sum
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ConnectionTableConv2d(nn.Module):
    """A conv whose output map i reads only the input maps ``table[i]`` (the paper's C3).

    Output maps with the same number of inputs share one grouped conv over the gathered
    input channels, so the parameters are exactly those of the table.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], kernel_size: int) -> None:
        super().__init__()
        fan_ins = sorted({len(row) for row in table})
        self.convs = nn.ModuleList()
        order: list[int] = []
        for n in fan_ins:
            rows = [i for i, row in enumerate(table) if len(row) == n]
            index = torch.tensor([c for i in rows for c in table[i]])
            self.register_buffer(f"index{n}", index, persistent=False)
            self.convs.append(nn.Conv2d(n * len(rows), len(rows), kernel_size, groups=len(rows)))
            order += rows
        self.fan_ins = fan_ins
        self.register_buffer("order", torch.argsort(torch.tensor(order)), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        pairs = zip(self.fan_ins, self.convs, strict=True)
        outs = [conv(x.index_select(1, getattr(self, f"index{n}"))) for n, conv in pairs]
        return torch.cat(outs, 1).index_select(1, self.order)


class RBFOutput(nn.Module):
    """Euclidean RBF units with fixed centres: returns -||x - w_i||^2 per class as logits."""

    def __init__(self, in_features: int, num_classes: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        code = torch.randint(0, 2, (num_classes, in_features), generator=g).float() * 2 - 1
        self.register_buffer("centres", code)

    def forward(self, x: Tensor) -> Tensor:
        return -(x.unsqueeze(1) - self.centres).pow(2).sum(-1)


@register_model(
    family="lenet",
    paper=PAPER,
    input_size=(1, 32, 32),
    min_input_size=(32, 32),
    mean=MNIST_MEAN,
    std=MNIST_STD,
    num_classes=10,
    variants={
        "lenet5_1998": Variant(
            LeNetConfig(),
            60_000,
            "the paper (Section II.B: 60,000 trainable parameters)",
            notes="sparse C3 table, trainable subsampling, scaled tanh, fixed RBF output (random +-1 centres)",
        )
    },
)
class LeNet5Paper(ZooClassifier):
    """LeNet-5 as in the 1998 paper (see the module docstring for what is kept and left out).

    Args:
        config: layer widths (see `LeNetConfig`; C3 follows the paper's table, so widths[1] must be 16).
        in_channels: input image channels.
        num_classes: RBF output units; 0 returns the 84-d F6 features.
    """

    weight_init = WeightInit(conv=fan_in_uniform(2.4), linear=fan_in_uniform(2.4))  # the paper's rule

    fixed_input_size = (32, 32)

    def __init__(self, config: LeNetConfig, *, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "lenet5_1998")
        c1, c3 = config.widths
        f5, f6 = config.hidden
        if c1 != 6 or c3 != len(C3_TABLE):
            raise ConfigurationError(f"lenet5_1998: the C3 connection table needs widths (6, 16), got {config.widths}")
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(in_channels, c1, 5), ScaledTanh()),  # C1: (B, 6, 28, 28)
                nn.Sequential(Subsampling(c1), ScaledTanh(), ConnectionTableConv2d(C3_TABLE, 5), ScaledTanh()),
            ]
        )
        self.stage_channels = (c1, c3)
        self.stage_strides = (1, 2)
        self.num_features = f6
        self.pre_logits = nn.Sequential(
            Subsampling(c3),  # S4: (B, 16, 5, 5)
            ScaledTanh(),
            nn.Conv2d(c3, f5, 5),  # C5: (B, 120, 1, 1)
            ScaledTanh(),
            nn.Flatten(),
            nn.Linear(f5, f6),  # F6
            ScaledTanh(),
        )
        self.init_weights()
        self.reset_classifier(num_classes)

    def spatial_chain(self) -> list[LayerGeometry]:
        # C3's grouped convs run side by side: count one of them
        c1, c3, s2, s4, c5 = (
            self.stages[0][0],
            self.stages[1][2].convs[0],
            self.stages[1][0],
            self.pre_logits[0],
            self.pre_logits[2],
        )
        path = [("C1", c1), ("S2", s2.pool), ("C3", c3), ("S4", s4.pool), ("C5", c5)]
        return module_chain(path)

    def make_classifier(self, num_classes: int) -> nn.Module:
        return RBFOutput(self.num_features, num_classes)  # the paper's Euclidean RBF units

    def head_features(self, x: Tensor) -> Tensor:
        return self.pre_logits(x)
