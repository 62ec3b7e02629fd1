"""sr_sender: see man sr_sender; the work is done by the shared flow (sarra/flow/engine.py) with the
'sender' preset of sarra/flow/presets.py (sarra/flow/send.py pushes the files)."""

import sys

from sarra.commands.consumer import run


def main(argv=None) -> int:
    return run("sender", argv)


if __name__ == "__main__":
    sys.exit(main())
