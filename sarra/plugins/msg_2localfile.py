"""msg_2localfile (on_message, sr_sender default): where the announced file is here.

Sets ``parent.msg.local_file``: for a ``file:`` URL its path, otherwise the relpath under
``base_dir`` (else ``post_base_dir``, else ``/``), so that a sender reading its own pump's
``xpublic`` (http URLs of files it has on disk) sends the local copy. Plugins that run
after it may change ``local_file``.
"""

from sarra.flow.send import local_file


def on_message(parent):
    work = parent.msg
    msg = getattr(work, "msg", work)
    work.local_file = local_file(parent, msg)
    return True
