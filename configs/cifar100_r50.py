"""Fine-tune a converted torchvision ResNet-50 on CIFAR-100: configs/cifar10_r50.py's recipe.

    # Weights, once (see configs/cifar10_r50.py):
    python -m jtransfer.convert --arch resnet50 --src resnet50-0676ba61.pth --out weights/resnet50
    # Data, once, on a machine with network (copy the directory over if this one has none):
    tfds build cifar100 --data_dir=$HOME/tfds
    python -m jtransfer.main --config=configs/cifar100_r50.py --workdir=workdirs/c100_r50 \
        --config.data.data_dir=$HOME/tfds
    python -m jtransfer.main --config=configs/cifar100_r50.py:linear_probe --workdir=workdirs/c100_r50_lp \
        --config.data.data_dir=$HOME/tfds
    python -m jtransfer.main --config=configs/cifar100_r50.py:5shot --workdir=workdirs/c100_r50_5shot \
        --config.data.data_dir=$HOME/tfds
    python -m jtransfer.main --config=configs/cifar100_r50.py:runlocal --workdir=/tmp/c100_r50 \
        --config.data.data_dir=$HOME/tfds                                    # 10-step smoke run

Everything is as in configs/cifar10_r50.py (same args: ``full``, ``linear_probe``, ``Nshot``,
``res224``, ``runlocal``; the same BiT-HyperRule schedule, resolution and preprocessing): CIFAR-100
also has 50,000 32×32 training images, so BiT's rule picks the same 10,000-step schedule with
mixup. Only the data set, and with it a 100-way head, differ. 5-shot is 500 examples: BiT's
500-step schedule without mixup.

Runtime on one modern accelerator (A100/H100-class GPU or TPU v3-8/v4-8), an ESTIMATE, not a
measurement: as CIFAR-10, ≈ 20–40 min full fine-tune, ≈ 10–20 min linear probe, ≈ 3–5 min 5-shot.

Published number to compare against: BiT-M-R50x1 (Kolesnikov et al. 2020), CIFAR-100 86.4 % top-1
with BiT-HyperRule. BiT-M is pre-trained on ImageNet-21k; torchvision's ResNet-50 on ImageNet-1k
(and uses BatchNorm, not GroupNorm + weight standardisation), so expect LOWER numbers here. Our
expectation, a guess that no run here has confirmed: roughly 80–85 % full fine-tune, 65–72 %
linear probe. No 5-shot CIFAR-100 number for BiT-M-R50x1 is quoted here.
"""

from configs import cifar10_r50


def get_config(arg=None):
  """``arg``: as configs/cifar10_r50.py (``full``, ``linear_probe``, ``5shot``, ``res224``,
  ``runlocal``, comma-separated)."""
  return cifar10_r50.build("cifar100", num_classes=100, arg=arg)
