"""The audit chainer: gives committed audit records their place in the hash chain.

``--follow`` keeps running (one process per deployment: bin/run, the systemd unit
``keyline-audit-chainer``, the compose service ``chainer``); without it, one pass over the
current backlog. Several chainers are safe (each pass holds the chain head's lock) but useless.
"""

import logging
import signal
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import OperationalError, connection

from kernel.audit import audit_chain

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Chain the audit records not chained yet (--follow: keep doing it)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--follow", action="store_true", help="run until stopped")
        parser.add_argument(
            "--interval",
            type=float,
            default=0.1,
            help="seconds between passes that found nothing (default 0.1)",
        )
        parser.add_argument("--batch", type=int, default=2000, help="records per pass")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["follow"]:
            total = 0
            while chained := audit_chain(options["batch"]):
                total += chained
            self.stdout.write(f"chained {total} audit records")
            return
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        logger.info("audit chainer started")
        while not stopping:
            try:
                chained = audit_chain(options["batch"])
            except OperationalError:
                # The database went away (a restart, a failover): wait and reconnect.
                logger.warning("audit chainer: database unavailable", exc_info=True)
                connection.close()
                chained = 0
                time.sleep(1)
            if chained < options["batch"]:
                time.sleep(options["interval"])
        logger.info("audit chainer stopped")
