"""sr_poll: list remote directories (HTTP index pages, FTP, SFTP) and announce the files
that are new or changed since they were last announced (doc/spec/components.md, sr_poll).

listing.py   the parsers (ls lines, MLSD facts, HTML index pages) and the bounds every
             listed name meets (a remote server may be hostile)
lister.py    one directory listed over a transfer driver, on_line / on_html_page plugins
state.py     what was announced, kept across restarts (committed after the broker confirms)
announce.py  the v02 posts of listed files (sum z,d, parts 1,<size>,1,0,0)
poller.py    the poll loop: vip, directories, diff, post, confirm, commit
"""
