"""Optimizers and freezing as data: (regex → 'frozen' | lr multiplier | own schedule) rules.

    from jtransfer import optim
    cfg = optim.get_config()                                   # adamw, warmup + cosine, ...
    rules = [(r"^fc/", 1.0), (r"^layer4/", 0.1), (r".*", "frozen")]
    labels = optim.label_params(params, rules)                 # raises on unmatched params / rules
    tx = optim.build_optimizer(cfg, rules, params, total_steps=1000)   # frozen: set_to_zero, no state
    opt_state = optim.init_opt_state(tx, params)
    mask = optim.trainable_mask(labels)                        # for train.step.make_train_step
    model = models.create("resnet18", frozen_bn=optim.frozen_bn_patterns(labels, "frozen"))

Strategies (linear probe, last stages, full fine-tune, layer-wise decay, gradual unfreezing, LP-FT,
L2-SP) are presets producing ``Phase`` lists of such rules: ``optim.phases(config)``.
"""

from jtransfer.optim.config import KERNELS_ONLY, get_config, get_freezing_config
from jtransfer.optim.optimizers import DECOUPLED_DECAY, OPTIMIZERS, build_optimizer, init_opt_state
from jtransfer.optim.presets import PRESETS, Phase, head_pattern, phase_at, phases, stages_and_head
from jtransfer.optim.regularizers import l1_penalty, l2_penalty, l2sp_penalty
from jtransfer.optim.rules import (
                                        BN_MODES,
                                        FROZEN,
                                        Rule,
                                        frozen_bn_patterns,
                                        label_params,
                                        param_paths,
                                        parse_rules,
                                        path_str,
                                        trainable_mask,
)
from jtransfer.optim.schedules import SCHEDULE_FIELDS, SCHEDULES, make_schedule

__all__ = [
    "BN_MODES", "DECOUPLED_DECAY", "FROZEN", "KERNELS_ONLY", "OPTIMIZERS", "PRESETS", "Phase",
    "Rule", "SCHEDULES", "SCHEDULE_FIELDS", "build_optimizer",
    "frozen_bn_patterns", "get_config", "get_freezing_config", "head_pattern", "init_opt_state", "l1_penalty",
    "l2_penalty", "l2sp_penalty", "label_params", "make_schedule", "param_paths", "parse_rules",
    "path_str", "phase_at", "phases", "stages_and_head", "trainable_mask",
]
