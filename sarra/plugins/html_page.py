"""html_page (on_html_page, sr_poll's default): the entries of an HTTP index page
(``parent.data``) into ``parent.entries`` (name -> listing entry): the links of the page
that name something in the directory, with the size and date the page gives (Apache,
nginx, python's http.server). Facts: doc/spec/plugins.md.
"""

from sarra.poll.listing import html_entries


def on_html_page(parent):
    parent.entries = {e.name: e for e in html_entries(str(getattr(parent, "data", "") or ""))}
    return True
