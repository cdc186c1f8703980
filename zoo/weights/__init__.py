"""Import weights from torchvision and timm, strictly, and read weight files safely.

Each family says how its modules correspond to the reference library's with a key
map, a method on the model class next to the layout it describes:

    def torchvision_key_map(self) -> dict[str, str]:
        return {"stages.0.0.conv": "features.0", ..., "fc": "classifier.6"}

Keys are module (or full parameter) paths; a state-dict key is translated by its
longest mapped prefix (``stages.0.0.conv.weight`` -> ``features.0.weight``). The import
is strict: every key of the zoo model must be found, every key of the source must be
used, every shape must agree; otherwise one `WeightsError` lists what did not fit.
The one exception is a target the key map wraps in `Reshape`: its tensors are reshaped
to the zoo model's shape when the number of elements agrees (timm stores ConvNeXt's
layer scale as (C,), torchvision and zoo as (C, 1, 1)). And a mapped module the zoo model
does not have (a feature extractor's removed head, `ZooClassifier.remove_head`, as in a U-Net's
encoder) leaves the source's tensors for it out.

Files are read with ``torch.load(weights_only=True)`` or as safetensors, so a weights
file never runs code.
"""

from zoo.weights.files import export_card, export_weights, load_file, save_file
from zoo.weights.keymaps import SOURCES, Reshape, convert_state_dict, import_weights
from zoo.weights.layouts import adapt_input_conv, layouts, load_state_dict
from zoo.weights.sources import OFFLINE_VARIABLES, cards_of, fetch, list_weights, load_weights, parse_weights

__all__ = [
    "OFFLINE_VARIABLES",
    "SOURCES",
    "Reshape",
    "adapt_input_conv",
    "cards_of",
    "convert_state_dict",
    "export_card",
    "export_weights",
    "fetch",
    "import_weights",
    "layouts",
    "list_weights",
    "load_file",
    "load_state_dict",
    "load_weights",
    "parse_weights",
    "save_file",
]
