"""line_date (on_line, sr_poll's default in v2): v2 rewrote the date of each listing line
into one standard form for its own comparisons. sarra parses every date form itself
(sarra/poll/listing.py: Mon DD HH:MM, DD Mon, ISO, a year, DOS), in UTC: the line is kept
as it is.
"""


def on_line(parent):
    return True
