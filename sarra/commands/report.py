"""sr_report: see man sr_report; the work is done by the shared flow (sarra/flow.py) with the
'report' preset of sarra/components.py."""

import sys

from sarra.commands.consumer import run


def main(argv=None) -> int:
    return run("report", argv)


if __name__ == "__main__":
    sys.exit(main())
