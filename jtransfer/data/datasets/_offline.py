"""Base class of the TFDS builders whose data ships inside an installed package."""
import sys

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

  # What ``_info`` describes: set by each builder.
  IMAGE_SHAPE: tuple[int, int, int]
  CLASS_NAMES: tuple[str, ...]
  HOMEPAGE: str

  def _info(self):
    """Images of ``IMAGE_SHAPE`` and labels among ``CLASS_NAMES``; the builder module's
    docstring as the description."""
    return tfds.core.DatasetInfo(
        builder=self,
        description=sys.modules[type(self).__module__].__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=self.IMAGE_SHAPE),
            'label': tfds.features.ClassLabel(names=list(self.CLASS_NAMES)),
        }),
        supervised_keys=('image', 'label'),
        homepage=self.HOMEPAGE,
    )
