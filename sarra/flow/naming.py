"""The destination file name rules of v2's ``filename`` option (from MetPX Sundew), and the
``destfn_script`` hook: where sr_subscribe writes a file, where sr_sender puts it.

Sundew names have ``:``-separated fields (``WHAT:ORIGIN:...:YYYYMMDDhhmmss``), sometimes
ending with ``SENDER=<name>``. ``filename`` (or the third word of an ``accept`` line, which
wins) holds ``:``-separated keywords applied in order to the name placement computed (after
strip, flatten and mirror):

``WHATFN``  the first field;  ``HEADFN``  the first two ``_`` parts of the first field;
``SENDER``  the value of the ``SENDER=`` field;  ``NONE``  the whole name without the
``SENDER=`` field (else its first six fields, five when the fifth is longer than one
character);  ``NONESENDER``  the same, the ``SENDER=`` field kept;  ``DESTFN=<name>``
that name;  ``DESTFNSCRIPT=<plugin>``  what the plugin sets as ``parent.new_file``;
``TIME``  appends ``:<YYYYMMDDhhmmss>`` (the post's pubtime, or the name's own final
timestamp field);  ``SATNET=<...>``  appends ``:SATNET=<...>``.

A ``sundew_extension`` header replaces the fields after the first, as in v2. Then the
``destfn_script`` plugins run (``parent.new_file``). Whatever comes out must be a plain
file name (no ``/``, not ``.``/``..``): a message cannot use these rules to write
elsewhere (PlacementError, 403).
"""

import time
from typing import Optional

from sarra import plugin
from sarra.flow.placement import PlacementError

# the keywords are checked when the configuration is read: config/v2refuse.py


def _keep_fields(name: str, parts) -> str:
    """NONE without SENDER=: Sundew keeps six fields (PX), five when the fifth is not one
    character (PDS)."""
    if len(parts) >= 6:
        name = ":".join(parts[:6])
        if len(parts[4]) != 1:
            name = ":".join(parts[:5])
    return name


def _time_suffix(pubtime: Optional[str], parts) -> str:
    last = parts[-1]
    if len(last) == 14 and last[:1] == "2" and last.isdigit():
        return ":" + last           # the name has its own timestamp: kept
    if pubtime:
        return ":" + pubtime.split(".")[0].replace("T", "")
    return ":" + time.strftime("%Y%m%d%H%M%S", time.gmtime())


def apply_rules(option: str, name: str, pubtime: Optional[str] = None,
                extension: Optional[str] = None, script=None) -> str:
    """The name ``option`` (a filename value) gives to file ``name``. ``script(name,
    plugin_name)`` runs a DESTFNSCRIPT= plugin and returns the name it chose."""
    parts = name.split(":")
    first = parts[0]
    if extension:
        parts = [first] + str(extension).split(":")
        name = ":".join(parts)
    dest, satnet, suffix = name, "", ""
    for spec in option.split(":"):
        if spec == "WHATFN":
            dest = first
        elif spec == "HEADFN":
            dest = "_".join(first.split("_")[:2])
        elif spec in ("SENDER", "NONE", "NONESENDER"):
            i = name.find("SENDER=")
            if spec == "SENDER":
                if i >= 0:
                    dest = name[i + 7:].split(":")[0]
                continue
            if i >= 0:
                j = name.find(":", i)
                dest = name[:i] if spec == "NONE" else (name if j < 0 else name[:j])
            else:
                dest = _keep_fields(dest, parts)
            dest = dest.rstrip(":") or dest
        elif spec.startswith("SATNET="):
            satnet = ":" + spec
        elif spec.startswith("DESTFNSCRIPT="):
            if script is not None:
                dest = script(dest, spec[len("DESTFNSCRIPT="):]) or dest
        elif spec.startswith("DESTFN="):
            dest = spec[len("DESTFN="):]
        elif spec == "TIME":
            suffix = _time_suffix(pubtime, parts)
    return dest + satnet + suffix


def _plain(name, rule: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") \
            or "\0" in name:
        raise PlacementError("%s gives the file name %r: not a plain name" % (rule, name))
    return name


def _run_destfn(flow, work, name: str, func=None) -> str:
    """Run destfn_script plugins (or one DESTFNSCRIPT= callable) with parent.new_file."""
    parent = flow.hooks.parent
    saved = work.new_file
    work.new_file = name
    try:
        parent.new_file = name
        if func is None:
            flow.hooks.run("destfn_script")
        else:
            try:
                func(parent)
            except Exception as e:
                flow.log.error("plugin destfn_script failed for %s: %s: %s",
                               work.msg.relpath, type(e).__name__, e)
        chosen = parent.new_file if parent.new_file != name else work.new_file
    finally:
        work.new_file = saved
    return chosen


def dest_name(flow, work, name: str) -> str:
    """The file name the filename rules and destfn_script plugins give ``name`` (the name
    placement chose) for this message; ``name`` itself when there are none."""
    m = work.mask
    option = getattr(m, "filename", None) if m is not None else \
        getattr(flow.cfg, "filename", None)
    hooks = getattr(flow, "hooks", None)
    if not option and not (hooks is not None and hooks.has("destfn_script")):
        return name
    if option and option != "None":
        scripts = flow.__dict__.setdefault("_destfn_scripts", {})

        def script(current, plugin_name):
            if plugin_name not in scripts:
                try:
                    scripts[plugin_name] = plugin.load(plugin_name, "destfn_script",
                                                       hooks.search_dirs, hooks.parent)
                except plugin.PluginError as e:
                    raise PlacementError("filename DESTFNSCRIPT=%s: %s" % (plugin_name, e))
            return _run_destfn(flow, work, current, scripts[plugin_name])
        name = _plain(apply_rules(option, name, work.msg.pubtime,
                                  work.msg.headers.get("sundew_extension"), script),
                      "filename %s" % option)
    if hooks is not None and hooks.has("destfn_script"):
        name = _plain(_run_destfn(flow, work, name), "destfn_script")
    return name
