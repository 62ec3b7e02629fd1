"""Option ``outlet`` (v2): what a consumer without a ``post_broker`` does with each message
it handled: ``post`` (the default: nothing, there is nowhere to post), ``json`` (one JSON
line per message, ``[topic, headers, body]`` as v2 writes it) or ``url`` (its URL), on the
stream the command gives (``flow.outlet_stream``: stdout in foreground, the log otherwise).
With a ``post_broker`` the messages are posted and ``outlet`` changes nothing, as in v2.

Facts: doc/spec/config.md (``outlet``).
"""
import json


def line(kind: str, msg) -> str:
    """The line ``outlet kind`` writes for msg (None for ``post``)."""
    if kind == "json":
        topic, body, headers = msg.encode(allow_long_headers=True)
        return json.dumps([topic, headers, body], sort_keys=True)
    if kind == "url":
        return msg.url
    return None


def emit(flow, work) -> None:
    """Write the line of each message the work ends with (its re-posts, else itself)."""
    kind = flow.cfg.get("outlet", "post") or "post"
    stream = getattr(flow, "outlet_stream", None)
    if kind == "post" or stream is None:
        return
    for m in (work.posts or [work.msg]):
        text = line(kind, m)
        if text is not None:
            stream.write(text + "\n")
    stream.flush()
