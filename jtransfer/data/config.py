"""The data config: every field with its default, and its validation.

    from jtransfer import data
    cfg = data.get_config()
    cfg.dataset = 'mnist5k'
    data.validate_config(cfg)         # ValueError naming the bad field, op or argument
    pp = data.resolve_pp(cfg, train=True)

`pp_train` / `pp_eval` left at None mean "this dataset's default" (`default_pp`), so that
changing `dataset` alone gives a sensible pipeline.
"""
from ml_collections import config_dict

from jtransfer.data import fewshot, folder, preprocess


def get_config() -> config_dict.ConfigDict:
  """The data fields with their defaults (locked: an unknown field is an error)."""
  cfg = config_dict.ConfigDict()
  # 'uci_digits', 'mnist5k' (offline, prepared on first use), any prepared TFDS name such
  # as 'cifar10', or 'folder:/path/root' for root/{train,test}/<class>/<images>.
  cfg.dataset = 'uci_digits'
  # TFDS data directory; None = TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
  cfg.data_dir = config_dict.placeholder(str)
  cfg.train_split = 'train'  # Any TFDS split string ('train[:90%]') or a folder subdir.
  cfg.eval_split = 'test'  # Also 'val200' / 'train800' / 'train800val200' (VTAB-1k parts).
  cfg.image_size = 32  # Side of the square images the default pipelines produce.
  # Lists of op specs, 'name' or {'op': name, **args} (see jtransfer/data/preprocess.py);
  # None = default_pp(dataset, image_size).
  cfg.pp_train = config_dict.placeholder(list)
  cfg.pp_eval = config_dict.placeholder(list)
  # The default pipelines' final normalize op: {'mean': ..., 'std': ...} of x / 255 (per channel or
  # one number). None = ImageNet's mean/std; the trainer fills in the model family's (its
  # pretrained weights' own: models.get_spec(arch).normalize) when left None.
  cfg.normalize = config_dict.placeholder(dict)
  cfg.shots = config_dict.placeholder(int)  # Examples per class for training; None = all.
  cfg.fewshot_seed = 0  # Seed of the per-class draw of `shots` examples.
  cfg.vtab1k = False  # Train on the first 800 examples of train_split ('train800').
  cfg.batch_size = 128  # GLOBAL train batch, split evenly over the processes.
  # A train split smaller than one batch (1-shot x 10 classes, batch 32): False = an error naming
  # the dataset; True = batches repeat examples, and the run logs it.
  cfg.repeat_small = False
  cfg.eval_batch_size = 256  # GLOBAL eval batch; the last one is padded (see 'mask').
  cfg.shuffle_buffer = 10_000  # Examples; capped at the local split size.
  cfg.skip_corrupt = False  # Folders: leave out (and log) unreadable images; else raise.
  cfg.cache = True  # Cache examples in memory after the leading deterministic pp ops.
  cfg.mixup_alpha = 0.0  # > 0: mix train batches, adding 'soft_label' [B, num_classes].
  cfg.prefetch = 2  # Batches prefetched by tf.data.
  cfg.lock()
  return cfg


def _value_range_for(dataset):
  # uci_digits stores its raw 0..16 values; everything else is uint8 0..255.
  return 16.0 if dataset == 'uci_digits' else 255.0


def default_pp(dataset: str, image_size: int, *, train: bool, normalize=None) -> list:
  """The default op specs: torchvision-style, ending in a normalization (``normalize``: the
  ``mean``/``std`` of x / 255 the model expects; None = ImageNet's).

  uci_digits / mnist5k (gray digits): decode, resize to image_size, 3 channels,
  (train: a random shift of up to image_size // 8 pixels; no flips for digits).
  Others: train = inception crop + flip; eval = resize shorter side to
  image_size / 0.875, center crop.
  """
  in_max = _value_range_for(dataset)
  norm = {'op': 'normalize', 'in_max': in_max, **dict(normalize or {})}
  if dataset in ('uci_digits', 'mnist5k'):
    ops = ['decode', {'op': 'resize', 'size': image_size}, 'grayscale_to_rgb']
    if train:
      ops.append({'op': 'random_crop', 'size': image_size, 'padding': image_size // 8})
    return ops + [norm]
  if train:
    return [{'op': 'decode', 'channels': 3},
            {'op': 'inception_crop', 'size': image_size}, 'flip_lr', norm]
  return [{'op': 'decode', 'channels': 3},
          {'op': 'resize_small', 'size': int(round(image_size / 0.875))},
          {'op': 'center_crop', 'size': image_size}, norm]


def resolve_pp(cfg, *, train: bool) -> list:
  """cfg.pp_train / cfg.pp_eval, or the dataset's default when None."""
  spec = cfg.pp_train if train else cfg.pp_eval
  if spec is None:
    spec = default_pp(cfg.dataset, cfg.image_size, train=train, normalize=cfg.get('normalize'))
  return list(spec)


def _positive_int(cfg, key):
  value = cfg[key]
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ValueError(f'data.{key} must be a positive int, got {value!r}')


def validate_config(cfg) -> None:
  """Raises ValueError naming the first bad field, op or op argument."""
  known = set(get_config().keys())
  unknown = sorted(set(cfg.keys()) - known)
  if unknown:
    raise ValueError(f'unknown data config fields {unknown}; known: {sorted(known)}')
  missing = sorted(known - set(cfg.keys()))
  if missing:
    raise ValueError(f'data config lacks fields {missing}')
  if not isinstance(cfg.dataset, str) or not cfg.dataset:
    raise ValueError(f'data.dataset must be a non-empty string, got {cfg.dataset!r}')
  if cfg.dataset.startswith(folder.PREFIX):
    folder.parse_root(cfg.dataset)
  for key in ('train_split', 'eval_split'):
    if not isinstance(cfg[key], str) or not cfg[key]:
      raise ValueError(f'data.{key} must be a non-empty string, got {cfg[key]!r}')
  for key in ('image_size', 'batch_size', 'eval_batch_size', 'shuffle_buffer'):
    _positive_int(cfg, key)
  if not isinstance(cfg.prefetch, int) or cfg.prefetch < 0:
    raise ValueError(f'data.prefetch must be an int >= 0, got {cfg.prefetch!r}')
  if cfg.shots is not None:
    _positive_int(cfg, 'shots')
  if not isinstance(cfg.fewshot_seed, int):
    raise ValueError(f'data.fewshot_seed must be an int, got {cfg.fewshot_seed!r}')
  for key in ('vtab1k', 'skip_corrupt', 'cache'):
    if not isinstance(cfg[key], bool):
      raise ValueError(f'data.{key} must be a bool, got {cfg[key]!r}')
  if cfg.vtab1k and cfg.shots is not None:
    raise ValueError('data.vtab1k and data.shots select the training examples in two '
                     'different ways: set only one of them')
  if cfg.train_split in fewshot.VTAB1K_PARTS:
    raise ValueError(f'data.train_split={cfg.train_split!r}: VTAB-1k parts are taken '
                     'from train_split; set data.vtab1k=True instead')
  if not isinstance(cfg.mixup_alpha, (int, float)) or cfg.mixup_alpha < 0:
    raise ValueError(f'data.mixup_alpha must be a number >= 0, got {cfg.mixup_alpha!r}')
  for key, train in (('pp_train', True), ('pp_eval', False)):
    if cfg[key] is not None and not isinstance(cfg[key], (list, tuple)):
      raise ValueError(f'data.{key} must be a list of op specs or None, got {cfg[key]!r}')
    preprocess.build_pp(resolve_pp(cfg, train=train), name=f'data.{key}')
