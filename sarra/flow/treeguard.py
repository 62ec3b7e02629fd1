"""The tree stays closed: no entry that a flow creates, moves or links can resolve outside
the target directory, whatever other entries are moved, replaced or linked later.

One invariant, one place. A symbolic link is allowed in the tree only when its target is
*structurally* confined, judged from where the link physically is (its directory's real
path, so how many directories it sits below the root):

* a relative target is a run of leading ``..`` (no more of them than the link's depth below
  the root) followed by plain names: it climbs to a fixed directory inside the tree, then
  only descends. A ``..`` after a name is refused: what it climbs out of depends on whether
  that name is, or later becomes, a symbolic link (``a/../../x`` with ``a -> .``);
* an absolute target has no ``..`` and names the root or something below it.

If every link of the tree obeys this, any path resolved inside the tree stays inside: each
expansion starts at a directory of the tree, climbs at most to the root and then descends
through names that are real directories or links obeying the same rule. The rule depends
only on a link's own target and depth, so a *move* is checked by the same rule at the
depth the link (or every link below a moved directory) will have afterwards, before the
rename (a clean refusal, nothing changed) and again on the result right after it (a link
slipped in meanwhile by another instance is removed). Each link is also resolved for real
(``realpath``) before it is made: a link already in the tree that leads outside (put there
by other means) is not followed either.
"""

import os
import posixpath
import stat
from typing import List, Optional, Tuple


class Escape(Exception):
    """An entry would resolve outside the tree (reported as 403 Forbidden)."""

    code = 403


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def shown(path: str, *roots: str) -> str:
    """``path`` as messages show it: relative to the tree's root when below it."""
    for root in roots:
        top = root.rstrip("/") + "/"
        if path.startswith(top):
            return path[len(top):]
    return path


def depth_below(real_root: str, real_dir: str) -> Optional[int]:
    """How many directories ``real_dir`` is below ``real_root`` (both real paths); None
    when it is not inside it."""
    if real_dir == real_root:
        return 0
    if not _inside(real_dir, real_root):
        return None
    return len([c for c in real_dir[len(real_root.rstrip("/")) + 1:].split("/") if c])


def target_escapes(target: str, depth: int, roots: Tuple[str, ...] = ()) -> Optional[str]:
    """Why a symbolic link to ``target`` sitting ``depth`` directories below the root could
    resolve outside the tree; None when it cannot. ``roots``: the root's absolute paths
    (as configured and real) that an absolute target may name; none: absolute refused."""
    if not target or "\0" in target:
        return "an empty target or one with a NUL byte"
    comps = [c for c in target.split("/") if c not in ("", ".")]
    if target.startswith("/"):
        if ".." in comps:
            return "an absolute target with '..'"
        norm = posixpath.normpath(target)
        if any(r and _inside(norm, r.rstrip("/") or "/") for r in roots):
            return None
        return "an absolute target"
    up = 0
    while up < len(comps) and comps[up] == "..":
        up += 1
    if ".." in comps[up:]:
        return "'..' after a name (what it climbs out of can change)"
    if up > depth:
        return f"it climbs {up} directories from {depth} below the root"
    return None


def check_link(root: str, real_root: str, path: str, target: str) -> None:
    """Refuse (Escape) a symbolic link ``path`` -> ``target`` in the tree ``root``
    (``real_root``: its real path). ``path``'s directory need not exist yet."""
    real_dir = os.path.realpath(os.path.dirname(path))
    depth = depth_below(real_root, real_dir)
    if depth is None:
        why = f"its directory resolves to {real_dir}"
    else:
        why = target_escapes(target, depth, (os.path.abspath(root), real_root))
    if why is None and not _inside(os.path.realpath(os.path.join(real_dir, target)),
                                   real_root):
        why = f"resolves to {os.path.realpath(os.path.join(real_dir, target))}"
    if why is not None:
        raise Escape(f"link {shown(path, root, real_root)} -> {target!r} leads outside "
                     f"the target directory {real_root}: {why}")


def _links_below(top: str):
    """(path relative to top, target) of every symbolic link below the directory top
    (links are not followed; unreadable parts are skipped)."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        rel = os.path.relpath(dirpath, top)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            try:
                target = os.readlink(p)
            except OSError:
                continue
            yield os.path.normpath(os.path.join(rel, name)), target


def check_move(root: str, real_root: str, src: str, dst: str) -> None:
    """Refuse (Escape) moving the entry ``src`` to ``dst`` when it, or any link below it
    (a directory), would resolve outside the tree from its new place."""
    try:
        st = os.lstat(src)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        check_link(root, real_root, dst, os.readlink(src))
    elif stat.S_ISDIR(st.st_mode):
        new_top = os.path.join(os.path.realpath(os.path.dirname(dst)), os.path.basename(dst))
        if depth_below(real_root, new_top) is None:
            raise Escape(f"{shown(dst, root)} resolves to {new_top}, outside the target "
                         f"directory {real_root}")
        for rel, target in _links_below(src):
            check_link(root, real_root, os.path.join(new_top, rel), target)


def sweep(root: str, real_root: str, path: str) -> List[Tuple[str, str]]:
    """Check the entry at ``path`` as it now is (and every link below it, a directory) and
    remove each link that resolves outside the tree: [(link, why)] of those removed."""
    try:
        st = os.lstat(path)
    except OSError:
        return []
    if stat.S_ISLNK(st.st_mode):
        links = [(path, os.readlink(path))]
    elif stat.S_ISDIR(st.st_mode):
        links = [(os.path.join(path, rel), t) for rel, t in _links_below(path)]
    else:
        return []
    removed = []
    for p, target in links:
        try:
            check_link(root, real_root, p, target)
        except Escape as e:
            try:
                if os.readlink(p) == target:
                    os.unlink(p)
            except OSError:
                pass
            removed.append((p, str(e)))
    return removed


def settle(root: str, real_root: str, path: str, log=None) -> None:
    """After an entry was put at ``path``: links of it that lead outside the tree (slipped
    in by a concurrent writer) are removed, each logged, and the operation refused."""
    removed = sweep(root, real_root, path)
    for _, why in removed:
        if log is not None:
            log.warning("removed: %s", why)
    if removed:
        raise Escape(removed[0][1])


def move(root: str, real_root: str, src: str, dst: str, make_dir=None, log=None) -> None:
    """Rename ``src`` to ``dst`` inside the tree, refused (Escape, nothing moved) when the
    entry or a link below it would then resolve outside; the result is checked again right
    after the rename (settle). ``make_dir``: called to create dst's directory once allowed.
    OSError from the rename itself is the caller's."""
    try:
        check_move(root, real_root, src, dst)
    except Escape as e:
        raise Escape(f"move {shown(src, root)} to {shown(dst, root)}: {e}") from None
    if make_dir is not None:
        make_dir()
    os.replace(src, dst)
    settle(root, real_root, dst, log)
