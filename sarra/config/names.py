"""Which file a configuration named on a command line is, and the name a file stands for
(config.md §1): `name`, `name.conf` or a path; a disabled one (`name.conf.off`) is an
error saying so. Also the one configuration error type (ConfigError), which
sarra.config.parser re-exports."""

import os
from typing import Optional, Tuple

from sarra import paths


class ConfigError(Exception):
    """A configuration that cannot be used; one line naming file:line or path."""
    exit_code = 2


def resolve_config(component: str, config: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """(name, path) of a configuration given as name, name.conf or path."""
    if not config:
        return None, None
    cdir = paths.component_config_dir(component)
    if "/" in config or config.startswith("~"):
        path = os.path.abspath(os.path.expanduser(config))
    else:
        fname = config if config.endswith((".conf", ".conf.off")) else config + ".conf"
        path = os.path.join(cdir, fname)
        if not os.path.exists(path):
            if os.path.exists(path + ".off"):
                raise ConfigError("%s.off: configuration '%s' is disabled (use enable)"
                                  % (path, os.path.basename(fname)[:-5]))
            if os.path.isfile(config):
                path = os.path.abspath(config)
    return config_name(path), path


def config_name(config: str) -> str:
    """The configuration name a word or path stands for: its file name without .conf or
    .conf.off (nothing is read: it names a configuration that may be gone)."""
    name = os.path.basename(config)
    for suffix in (".conf.off", ".conf"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name
