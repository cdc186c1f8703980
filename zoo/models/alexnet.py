"""AlexNet: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NeurIPS 2012,
https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks

`alexnet` is the variant torchvision ships (61,100,840 parameters), which follows
Krizhevsky's later "One weird trick for parallelizing convolutional neural networks"
(2014, https://arxiv.org/abs/1404.5997) rather than the 2012 paper. Where it departs
from the 2012 paper:
- no local response normalisation after the first two convs;
- 64 first-layer filters (the paper has 96) and 192 in the second layer (paper 256);
- no grouped convolutions: the paper split conv2, conv4 and conv5 across two GPUs;
- padding 2 on the 11x11 stride-4 first conv, and an adaptive average pool to 6x6
  before the classifier, so inputs other than 224x224 work;
- dropout sits before the two hidden fully connected layers, as in torchvision.

Stages: conv1 (stride 4), pool + conv2 (stride 8), pool + conv3-5 (stride 16); the last
max pool belongs to the head. The smallest input is 63x63, where the last pool sees 3x3.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from zoo.checks import check_int
from zoo.layers import ConvNormAct, LayerFactory, make_act
from zoo.models.base import ZooClassifier
from zoo.registry import Paper, Variant, register_model

PAPER = Paper(
    "ImageNet Classification with Deep Convolutional Neural Networks",
    2012,
    "https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks",
    "A. Krizhevsky, I. Sutskever, G. E. Hinton",
)


@dataclass(frozen=True)
class AlexNetConfig:
    """Conv widths of the five conv layers and the width of the two hidden linear layers."""

    widths: tuple[int, int, int, int, int] = (64, 192, 384, 256, 256)
    hidden: int = 4096
    pool_size: int = 6


@register_model(
    family="alexnet",
    paper=PAPER,
    input_size=(3, 224, 224),
    min_input_size=(63, 63),
    variants={"alexnet": Variant(AlexNetConfig(), 61_100_840, "torchvision.models.alexnet", torchvision="alexnet")},
)
class AlexNet(ZooClassifier):
    """AlexNet as torchvision ships it (see the module docstring for the departures from the paper).

    Args:
        config: layer widths (see `AlexNetConfig`).
        in_channels: input image channels.
        num_classes: output classes; 0 returns the 4096-d pre-logits features.
        drop_rate: dropout before each hidden fully connected layer.
        act_layer: activation after every conv and hidden linear layer.
    """

    def __init__(
        self,
        config: AlexNetConfig,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.5,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "alexnet")
        w1, w2, w3, w4, w5 = config.widths

        def conv(cin: int, cout: int, k: int, stride: int = 1) -> ConvNormAct:
            return ConvNormAct(cin, cout, k, stride, norm_layer=None, act_layer=act_layer)

        self.stages = nn.ModuleList(
            [
                nn.Sequential(ConvNormAct(in_channels, w1, 11, 4, 2, norm_layer=None, act_layer=act_layer)),
                nn.Sequential(nn.MaxPool2d(3, 2), conv(w1, w2, 5)),  # (B, 192, H/8, W/8)
                nn.Sequential(nn.MaxPool2d(3, 2), conv(w2, w3, 3), conv(w3, w4, 3), conv(w4, w5, 3)),
            ]
        )
        self.stage_channels = (w1, w2, w5)
        self.stage_strides = (4, 8, 16)

        self.head_pool = nn.MaxPool2d(3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(config.pool_size)
        self.num_features = config.hidden
        self.pre_logits = nn.Sequential(
            nn.Dropout(drop_rate),
            nn.Linear(w5 * config.pool_size**2, config.hidden),
            make_act(act_layer),
            nn.Dropout(drop_rate),
            nn.Linear(config.hidden, config.hidden),
            make_act(act_layer),
        )
        self.reset_classifier(num_classes)

    def torchvision_key_map(self) -> dict[str, str]:
        """Our module paths -> torchvision's."""
        return {
            "stages.0.0.conv": "features.0",
            "stages.1.1.conv": "features.3",
            "stages.2.1.conv": "features.6",
            "stages.2.2.conv": "features.8",
            "stages.2.3.conv": "features.10",
            "pre_logits.1": "classifier.1",
            "pre_logits.4": "classifier.4",
            "fc": "classifier.6",
        }

    def head_features(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.head_pool(x)).flatten(1)  # (B, 256 * 6 * 6)
        return self.pre_logits(x)
