"""Base class of the TFDS builders whose data ships inside an installed package."""
from etils import epath
import tensorflow_datasets as tfds


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A GeneratorBasedBuilder that downloads nothing.

  `code_path` is given explicitly: TFDS 4.9's default looks it up through the
  `importlib_resources` back-port, which is not a declared dependency of TFDS and may be
  missing; the path is only used to look for (absent) download checksums.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    import inspect  # pylint: disable=g-import-not-at-top
    return epath.Path(inspect.getfile(cls))
