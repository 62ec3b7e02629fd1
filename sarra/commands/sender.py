"""sr_sender: see man sr_sender; the work is done by the shared flow (sarra/flow.py) with the
'sender' preset of sarra/components.py (sarra/send.py pushes the files)."""

import sys

from sarra.commands.consumer import run


def main(argv=None) -> int:
    return run("sender", argv)


if __name__ == "__main__":
    sys.exit(main())
