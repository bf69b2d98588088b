"""Weight conversion from the reference frameworks.

    from jtransfer import convert
    variables = convert.from_torchvision("resnet50.safetensors", "resnet50")

Command line (writes an Orbax checkpoint that ``jtransfer.weights.load`` reads):

    python -m jtransfer.convert --arch resnet50 --src resnet50.pth --out weights/resnet50
"""

from jtransfer.convert.pytorch import (
                                       ConversionError,
                                       from_torchvision,
                                       read_state_dict,
                                       to_torchvision,
)

__all__ = ["ConversionError", "from_torchvision", "read_state_dict", "to_torchvision"]
