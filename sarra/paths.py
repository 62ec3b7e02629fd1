"""Where sarra keeps configuration, state and logs (config.md §1).

Everything is computed at call time from the environment (HOME, XDG_CONFIG_HOME,
XDG_CACHE_HOME), so tests can relocate the trees with monkeypatch.
"""

import os
import tempfile
from typing import Iterable, List, Optional, Union

import appdirs

APPNAME = "sarra"

#: open() flag: a symbolic link at the name itself is never followed (ELOOP instead); data
#: is never written through a link planted on a temporary or final name
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

# The one list of sarra's components: their names as used for directories (the program
# name without 'sr_').  setup.py installs sr_<component> for each (tests/unit/
# test_one_of_each.py holds them together); sr_post runs once, the others as daemons.
COMPONENTS = (
    "post", "watch", "poll", "subscribe", "sarra", "sender", "shovel", "winnow", "report",
    "audit",
)
# 2016 names of components.
COMPONENT_ALIASES = {"log": "report", "police": "audit"}


def canonical_component(component: str) -> str:
    """'sr_subscribe' -> 'subscribe', 'log' -> 'report', 'police' -> 'audit'."""
    name = component
    if name.startswith("sr_"):
        name = name[3:]
    return COMPONENT_ALIASES.get(name, name)


def program_name(component: str) -> str:
    """'subscribe' -> 'sr_subscribe'."""
    return "sr_" + canonical_component(component)


def _usable_xdg(var: str) -> bool:
    """XDG variables that are empty or relative must be ignored (XDG base dir spec)."""
    value = os.environ.get(var)
    return value is None or os.path.isabs(value)


def config_dir() -> str:
    """~/.config/sarra (or $XDG_CONFIG_HOME/sarra)."""
    if _usable_xdg("XDG_CONFIG_HOME"):
        return appdirs.user_config_dir(APPNAME)
    return os.path.join(os.path.expanduser("~/.config"), APPNAME)


def cache_dir() -> str:
    """~/.cache/sarra (or $XDG_CACHE_HOME/sarra)."""
    if _usable_xdg("XDG_CACHE_HOME"):
        return appdirs.user_cache_dir(APPNAME)
    return os.path.join(os.path.expanduser("~/.cache"), APPNAME)


def component_config_dir(component: str) -> str:
    """~/.config/sarra/<component>."""
    return os.path.join(config_dir(), canonical_component(component))


def credentials_path() -> str:
    """~/.config/sarra/credentials.conf."""
    return os.path.join(config_dir(), "credentials.conf")


#: default of the host arguments below: the `statehost` directory in force in this process
SETTING = "<statehost setting>"
_state_host: Optional[str] = None


def set_state_host(host: Optional[str]) -> None:
    """`statehost` for this process (None: off): every state, log and pid path that is not
    given a host explicitly goes under ~/.cache/sarra/<host>/. config.load sets it from the
    configuration it reads; the umbrella command and the supervisor from default.conf."""
    global _state_host
    _state_host = host or None


def state_host() -> Optional[str]:
    """The `statehost` directory in force in this process (None: off)."""
    return _state_host


def _host_part(host: Optional[str]) -> List[str]:
    if host is SETTING:
        host = _state_host
    return [host] if host else []


def host_cache_dir(host: Optional[str] = SETTING) -> str:
    """~/.cache/sarra/[<host>/]: the root of state and logs (not of remote config copies)."""
    return os.path.join(*([cache_dir()] + _host_part(host)))


def state_dir(component: str, config: Optional[str], host: Optional[str] = SETTING,
              create: bool = True) -> str:
    """~/.cache/sarra/[<host>/]<component>/<config>/, created unless create=False.

    config None gives the component level directory. host: the `statehost` directory
    (default: the one in force in this process, see set_state_host; None: no host level).
    """
    parts = [cache_dir()] + _host_part(host) + [canonical_component(component)]
    if config:
        parts.append(config)
    path = os.path.join(*parts)
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def log_dir(host: Optional[str] = SETTING, create: bool = True) -> str:
    """~/.cache/sarra/[<host>/]log/, created unless create=False."""
    path = os.path.join(*([cache_dir()] + _host_part(host) + ["log"]))
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _package_dir(sub: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), sub)


def plugin_dirs() -> List[str]:
    """Plugin search path: user dir, then site dir, then the packaged plugins.

    Directories are listed whether or not they exist; callers test existence.
    """
    return [
        os.path.join(config_dir(), "plugins"),
        os.path.join(appdirs.site_config_dir(APPNAME), "plugins"),
        _package_dir("plugins"),
    ]


def sum_dirs() -> List[str]:
    """Extra checksum algorithm search path (user, site, package)."""
    return [
        os.path.join(config_dir(), "sum"),
        os.path.join(appdirs.site_config_dir(APPNAME), "sum"),
        _package_dir("sum"),
    ]


def atomic_write(path: str, data: Union[bytes, str], mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically: temp file in the same dir, fsync, rename.

    Parent directories are created if missing. Readers see either the old or the new
    content, never a partial file.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    _atomic_replace(path, lambda f: f.write(data), mode, binary=True)


def atomic_write_lines(path: str, lines: Iterable[str], mode: int = 0o600) -> None:
    """Like atomic_write, but streams text lines (a large cache is never held whole)."""
    _atomic_replace(path, lambda f: f.writelines(lines), mode, binary=False)


def _atomic_replace(path: str, write, mode: int, binary: bool) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        if binary:
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding="utf-8", buffering=1 << 20)
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    fsync_dir(directory)


def atomic_symlink(target: str, path: str, tmp: str) -> None:
    """Make `path` a symbolic link to `target`, replacing whatever is there atomically: the
    link is made under the temporary name `tmp` (a stale one there is removed first), then
    renamed over `path`.  OSError is raised as it is, the temporary link removed."""
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, path)
    except OSError:
        discard(tmp)
        raise


def discard(path: str) -> None:
    """Remove the file (or link) `path` if it is there; an error is ignored."""
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (best effort)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
