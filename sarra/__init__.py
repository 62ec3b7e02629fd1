__version__ = "0.1.0"

# Old import paths (before the subpackages of issue 18) stay importable.
from sarra import _oldpaths as _oldpaths  # noqa: E402
_oldpaths.install()
