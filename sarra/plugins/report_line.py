"""report_line (on_message): print one line per report on standard output.

For sr_report (sr_log): a source reading its reports sees who did what with each file:

    2024-03-15 12:15:02Z  anonymous@ws3.example.net  201 Downloaded  0.052s  https://dd.example.org/a/b.xml

Fields, separated by two spaces: the time the report was received (UTC; a v02 report
carries no time of its own), who (broker user @ host of the consumer), the code and its
message header, the duration the consumer took (seconds), and the URL of the file.
Every field is the consumer's own text, so control characters in it are escaped
(sarra.flow.reportguard.printable: ``\\n``, ``\\x1b``...): one report is one line, and nothing in
it reaches the terminal raw.
Messages that are not reports are skipped silently. The message always goes on (True).
"""

import sys
import time

from sarra.plugins.msg_by_user import message_of
from sarra.flow.reportguard import printable


def format_line(msg, received=None) -> str:
    rep = msg.report
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(received or time.time()))
    text = " ".join(printable(msg.headers.get("message", "")).split()) or "-"
    url = getattr(msg, "url", None) or (msg.baseurl + msg.relpath)
    return "%s  %s@%s  %03d %s  %.3fs  %s" % (when, printable(rep.user), printable(rep.host),
                                             rep.code, text, rep.duration, printable(url))


def on_message(parent):
    work = getattr(parent, "msg", None)
    msg = message_of(parent)
    if getattr(msg, "report", None) is None:
        return True
    print(format_line(msg, getattr(work, "received", None)), file=sys.stdout, flush=True)
    return True
