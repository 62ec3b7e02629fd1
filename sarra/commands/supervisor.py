"""sr_supervisor: the per-user supervisor process that `sr start` launches (see
sarra/ops/supervisor.py for what it does, and man sr).

    python -m sarra.commands.supervisor

Exit codes: 0 stopped normally; 2 configuration error (default.conf's statehost).
"""

import sys
from typing import List, Optional

from sarra.commands import common
from sarra.config import parser as config
from sarra.ops import logs, proctitle, supervisor


def main(argv: Optional[List[str]] = None) -> int:
    try:
        config.use_default_state_host()
    except config.ConfigError as e:
        return common.fail(supervisor.NAME, str(e), common.USAGE)
    logs.setup_named_logging(supervisor.NAME, supervisor.log_file(), level="info")
    proctitle.set_title(supervisor.NAME)        # `ps`, `pgrep sr_supervisor` find it
    return supervisor.Supervisor().run()


if __name__ == "__main__":
    sys.exit(main())
