"""Domain adaptation: labelled source, unlabelled target (``config.adapt``).

    from jtransfer.methods import adapt
    task = adapt.DANN(config)            # or adapt.SourceOnly(config); methods.task_for picks

``source.py``: the streams and the source-only baseline; ``dann.py``: DANN; ``grl.py``: the
gradient reversal layer; ``domain_head.py``: the domain classifier and its freezing rules.
"""

from jtransfer.methods.adapt.dann import DANN
from jtransfer.methods.adapt.source import SourceOnly

__all__ = ["DANN", "SourceOnly"]
