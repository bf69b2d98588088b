"""Zero-shot transfer through class descriptions: ESZSL, attribute tables, and the protocol.

    from jtransfer import zeroshot
    attrs = zeroshot.digit_attributes()                        # or load_attributes("emb.npy", C)
    out = zeroshot.zero_shot_protocol(train_x, train_y, test_x, test_y, attrs, splits=3, seed=0)
    out["summary"]["zsl_unseen"]["mean"], out["summary"]["zsl_chance"]["mean"]

Features are any ``[N, D]`` arrays (cached ``pre_logits`` of a frozen backbone, pixels, ...); a
class is described by a row of ``attributes``, so a class with no training example can still be
scored. ``eszsl`` holds the learner, ``attributes`` the description files, ``protocol`` the
seen/unseen splits and their ZSL / generalised-ZSL numbers.
"""

from __future__ import annotations

from jtransfer.methods.zeroshot import attributes, eszsl, protocol
from jtransfer.methods.zeroshot.attributes import (
    DIGIT_ATTRIBUTES,
    DIGIT_ATTRIBUTES_CSV,
    attribute_names,
    digit_attributes,
    load_attributes,
)
from jtransfer.methods.zeroshot.protocol import (
    class_splits,
    evaluate_split,
    summarize,
    zero_shot_protocol,
)

__all__ = [
    "DIGIT_ATTRIBUTES", "DIGIT_ATTRIBUTES_CSV", "attribute_names", "attributes", "class_splits",
    "digit_attributes", "eszsl", "evaluate_split", "load_attributes", "protocol", "summarize",
    "zero_shot_protocol",
]
