"""Reading a guide (doc/*.rst) as a script: its ``.. guide-test ...`` comments and its
literal blocks, in order. tests/integration/test_admin_guide.py and test_user_guide.py
run the guides with it; each gives the markers their meaning."""

import re

MARKER = re.compile(r"^\.\. guide-test (.*\S)\s*$")


def items(text):
    """[('mark', 'the words after guide-test') | ('block', [lines])] in the text's order;
    a block's lines lose their common indentation."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m:
            out.append(("mark", m.group(1)))
        elif lines[i].rstrip().endswith("::") and not lines[i].startswith(".. "):
            i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            if block:
                indent = min(len(b) - len(b.lstrip()) for b in block if b.strip())
                out.append(("block", [b[indent:] for b in block]))
            continue
        i += 1
    return out


def literal_blocks(text, mark):
    """[(groups of the marker regex `mark` before the block, or None; [lines])]: each
    literal block with the last marker matching `mark` since the previous block."""
    out, marker = [], None
    for kind, value in items(text):
        if kind == "mark":
            m = mark.match(".. guide-test " + value)
            if m:
                marker = m.groups()
        else:
            out.append((marker, value))
            marker = None
    return out
