"""Distil a fine-tuned digits classifier into a 4× narrower ResNet-18 (Hinton et al. 2015).

    # 1. The teacher (any arch; its export's model.json names it):
    python -m jtransfer.main --config=configs/finetune_digits.py --workdir=workdirs/finetune_digits
    # 2. The student:
    python -m jtransfer.main --config=configs/distill_digits.py --workdir=workdirs/distill_digits
    python -m jtransfer.main --config=configs/distill_digits.py:runlocal --workdir=/tmp/distill \
        --config.loss.distill.teacher=workdirs/finetune_digits/export

Loss: alpha·CE(labels) + (1 − alpha)·T²·KL(teacher_T ‖ student_T), the teacher run in inference mode
and never differentiated. The student is a small-stem ResNet-18 with base_planes=8 (stages
8-16-32-64) from random init, on UCI digits at 16×16 like the teacher.

Runtime on this 2-core CPU: about 30 s (runlocal: ~15 s). Expected eval top-1: ~0.96, close to the
teacher's ~0.97 with a quarter of its width.
"""

from configs import finetune_digits


def get_config(arg=None):
  """``arg``: '' or 'runlocal' (10 steps)."""
  config = finetune_digits.get_config(arg)
  config.model.base_planes = 8
  config.loss.label_smoothing = 0.0  # the teacher's soft targets already smooth
  config.loss.distill.teacher = "workdirs/finetune_digits/export"
  config.loss.distill.alpha = 0.5
  config.loss.distill.temperature = 4.0
  return config
