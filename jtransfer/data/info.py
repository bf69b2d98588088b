"""What a model needs to know about the data, and the class names saved in the workdir.

    info = dataset_info(cfg)    # DatasetInfo(num_classes=10, num_train=1347, ...)
    save_class_names(info, workdir)           # workdir/class_names.json
    load_class_names(workdir)                 # -> ['0', '1', ...]
"""
import json
import os
from typing import NamedTuple, Optional, Tuple

from jtransfer.data import config as config_lib
from jtransfer.data import pipeline, sources

CLASS_NAMES_FILE = 'class_names.json'


class DatasetInfo(NamedTuple):
  num_classes: int
  num_train: int  # Training examples after cfg.shots / cfg.vtab1k, all processes.
  num_eval: int  # Examples of cfg.eval_split, all processes.
  class_names: Tuple[str, ...]  # Index = label id.
  image_shape: Tuple[int, int, int]  # (H, W, C) of the batches the iterators deliver.


def dataset_info(cfg) -> DatasetInfo:
  config_lib.validate_config(cfg)
  train = sources.open_split(cfg, train=True)
  evaluation = sources.open_split(cfg)
  image_shape = pipeline.eval_dataset(cfg, process_index=0, process_count=1).element_spec[
      'image'].shape
  return DatasetInfo(num_classes=train.num_classes, num_train=train.num_examples,
                     num_eval=evaluation.num_examples, class_names=train.class_names,
                     image_shape=tuple(image_shape.as_list()[1:]))


def save_class_names(info: DatasetInfo, workdir: str) -> str:
  """Writes the class names (a JSON list, index = label id); returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CLASS_NAMES_FILE)
  with open(path, 'w') as f:
    json.dump(list(info.class_names), f, indent=1)
  return path


def load_class_names(workdir: str) -> Optional[list]:
  """The names saved by `save_class_names`."""
  with open(os.path.join(workdir, CLASS_NAMES_FILE)) as f:
    return json.load(f)
