"""keyline: a trader's machine and the venue, one command per step.

    keyline enroll --token-file F       make a key here, enroll it over EST, install the files
    keyline whoami                      who the venue says this certificate is
    keyline renew [--force] [--daemon]  re-enroll inside the renewal window, with a new key
    keyline rfq create INSTRUMENT SIDE QUANTITY [--leg INSTRUMENT SIDE ...]
    keyline rfq quote RFQ_ID [--bid PRICE] [--ask PRICE] --size SIZE
    keyline rfq accept RFQ_ID QUOTE_ID SIDE [--quantity Q] [--limit-price P]
    keyline rfq cancel RFQ_ID
    keyline rfq watch [--since N] [--count N]   follow the event feed (Server-Sent Events)

Every command prints one line a person reads (ids first, so the next command can take them),
or with --json the venue's JSON answer for scripts. Refusals print "error: CODE: message" on
stderr (with --json, also {"error": {"code", "message"}} on stdout) and exit 1; a request the
venue will answer later prints "pending: ..." and exits 3.
"""

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from keyline_client import venue
from keyline_client.config import Config, ConfigError, load

EXIT_REFUSED, EXIT_PENDING = 1, 3
T = TypeVar("T")
log = logging.getLogger("keyline")


def _print(args: argparse.Namespace, line: str, data: Any) -> None:
    print(json.dumps(data, sort_keys=True) if args.json else line, flush=True)


def _cert_facts(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "serial": format(cert.serial_number, "x"),
        "not_before": f"{cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}",
        "not_after": f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        "subject": cert.subject.rfc4514_string(),
    }


def _pending(args: argparse.Namespace, pending: venue.Pending) -> int:
    _print(
        args,
        f"pending: {pending.message} (ask again in {pending.retry_after} s)",
        {"pending": True, "retry_after": pending.retry_after, "message": pending.message},
    )
    return EXIT_PENDING


def _wait_for(args: argparse.Namespace, call: Callable[[], T]) -> T:
    """Calls again after each answer the venue holds (202), as long as ``--wait`` allows."""
    deadline = time.monotonic() + args.wait
    while True:
        outcome = call()
        if not isinstance(outcome, venue.Pending) or time.monotonic() >= deadline:
            return outcome
        time.sleep(min(outcome.retry_after, max(1.0, deadline - time.monotonic())))


def cmd_enroll(args: argparse.Namespace, config: Config) -> int:
    if config.cert_file.exists() and not args.replace:
        raise venue.VenueError(
            "ALREADY_ENROLLED",
            f"{config.cert_file} exists: renew it (keyline renew), or pass --replace",
        )
    token = _token(args)
    with venue.locked(config):
        outcome = _wait_for(args, lambda: venue.enroll(config, token))
    if isinstance(outcome, venue.Pending):
        return _pending(args, outcome)
    facts = _cert_facts(outcome)
    _print(
        args,
        f"enrolled {config.trader_id}: certificate {facts['serial']} valid until "
        f"{facts['not_after']}; key {config.key_file} (0600), certificate {config.cert_file}, "
        f"chain {config.chain_file}",
        {**facts, "key_file": str(config.key_file), "cert_file": str(config.cert_file)},
    )
    return 0


def _token(args: argparse.Namespace) -> str:
    """The enrollment token: --token, --token-file, or $KEYLINE_ENROLLMENT_TOKEN (the latter
    two keep it out of the process list and the shell's history)."""
    if args.token_file:
        path = Path(args.token_file).expanduser()
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            raise venue.VenueError("NO_TOKEN", f"no token file at {path}") from None
        if not token:
            raise venue.VenueError("NO_TOKEN", f"the token file {path} is empty")
        return token
    token = args.token or os.environ.get("KEYLINE_ENROLLMENT_TOKEN", "")
    if not token:
        raise venue.VenueError(
            "NO_TOKEN",
            "give the enrollment token: --token, --token-file or $KEYLINE_ENROLLMENT_TOKEN",
        )
    return token


def _reload_owed(config: Config) -> Path:
    return config.key_file.with_name(config.key_file.name + ".reload-owed")


def _reload(config: Config) -> None:
    """Runs ``reload_command`` after new files are in place. If it fails, the debt is kept
    (``<key_file>.reload-owed``) and paid on the next run, before anything else."""
    if not config.reload_command:
        return
    owed = _reload_owed(config)
    owed.touch()
    done = subprocess.run(shlex.split(config.reload_command), check=False)
    log.info("reload command %r exited %s", config.reload_command, done.returncode)
    if done.returncode != 0:
        raise venue.VenueError(
            "RELOAD_FAILED", f"{config.reload_command!r} exited {done.returncode}"
        )
    owed.unlink(missing_ok=True)


@dataclass(frozen=True)
class NotDue:
    """The certificate has more than ``renew_before`` of its lifetime left."""

    current: x509.Certificate


def renew_once(config: Config, *, force: bool) -> x509.Certificate | venue.Pending | NotDue:
    """The new certificate (installed, the reload hook run), the venue's Pending, or NotDue."""
    with venue.locked(config):
        if _reload_owed(config).exists():
            _reload(config)
        current = venue.certificate(config)
        left = venue.lifetime_left(current)
        if not force and left > config.renew_before and not config.pending_key_file.exists():
            return NotDue(current)
        outcome = venue.renew(config)
        if isinstance(outcome, x509.Certificate):
            _reload(config)
        return outcome


def _not_due(config: Config, current: x509.Certificate) -> str:
    return (
        f"not due: certificate {current.serial_number:x} has "
        f"{venue.lifetime_left(current):.0%} of its lifetime left (renewal at "
        f"{config.renew_before:.0%})"
    )


def cmd_renew(args: argparse.Namespace, config: Config) -> int:
    if args.daemon:
        return daemon(config, interval=args.interval)
    outcome = _wait_for(args, lambda: renew_once(config, force=args.force))
    if isinstance(outcome, venue.Pending):
        return _pending(args, outcome)
    if isinstance(outcome, NotDue):
        line = _not_due(config, outcome.current) + "; --force asks anyway"
        _print(args, line, {"renewed": False, **_cert_facts(outcome.current)})
        return 0
    facts = _cert_facts(outcome)
    _print(
        args,
        f"renewed: certificate {facts['serial']} valid until {facts['not_after']}",
        {"renewed": True, **facts},
    )
    return 0


def daemon(config: Config, *, interval: float, max_backoff: float = 3600.0) -> int:
    """Checks every ``interval`` seconds and renews when due (a request the venue holds is
    asked again after its Retry-After); after a failure of any kind, retries after 30 s,
    doubling up to ``max_backoff``, and logs why."""
    backoff = 0.0
    log.info("renewal daemon for %s: checking every %.0f s", config.trader_id, interval)
    while True:
        try:
            outcome = renew_once(config, force=False)
        except Exception as exc:  # a daemon outlives any one failure, and says which
            backoff = min(max_backoff, backoff * 2 or 30.0)
            log.warning(
                "renewal failed (%s: %s); retrying in %.0f s", type(exc).__name__, exc, backoff
            )
            time.sleep(backoff)
            continue
        backoff = 0.0
        if isinstance(outcome, venue.Pending):
            log.info("renewal pending: %s", outcome.message)
            time.sleep(min(interval, outcome.retry_after))
            continue
        if isinstance(outcome, NotDue):
            log.info(_not_due(config, outcome.current))
        else:
            log.info("renewed: certificate %x until %s", outcome.serial_number,
                     outcome.not_valid_after_utc.isoformat())  # fmt: skip
        time.sleep(interval)


def cmd_whoami(args: argparse.Namespace, config: Config) -> int:
    me = venue.api(config, "GET", "whoami/")
    p, f, c = me["participant"], me["firm"], me["certificate"]
    _print(
        args,
        f"{p['trader_id']} ({p['role']}) of {f['legal_name']} [{f['lei']}]; certificate "
        f"{c['serial']} until {c['not_after']} ({c['days_to_expiry']} days)",
        me,
    )
    return 0


def _rfq_line(rfq: dict[str, Any]) -> str:
    legs = ", ".join(f"{leg['side']} {leg['instrument']}" for leg in rfq["legs"])
    return f"{rfq['id']} {rfq['state']}: {legs}, quantity {rfq['quantity']}"


def cmd_rfq(args: argparse.Namespace, config: Config) -> int:
    if args.rfq_command == "create":
        legs = [{"instrument": args.instrument, "side": args.side}]
        legs += [{"instrument": i, "side": s} for i, s in args.leg or []]
        body: dict[str, Any] = {"legs": legs, "quantity": args.quantity}
        if args.expires_in:
            body["expires_in"] = args.expires_in
        rfq = venue.api(config, "POST", "rfqs/", body)
        _print(args, _rfq_line(rfq), rfq)
    elif args.rfq_command == "quote":
        body = {"bid_price": args.bid, "ask_price": args.ask}
        if args.bid:
            body["bid_size"] = args.size
        if args.ask:
            body["ask_size"] = args.size
        quote = venue.api(config, "POST", f"rfqs/{args.rfq_id}/quotes/", body)
        _print(
            args,
            f"{quote['id']} {quote['state']}: bid {quote['bid_price']} / ask "
            f"{quote['ask_price']} on {quote['rfq_id']}",
            quote,
        )
    elif args.rfq_command == "accept":
        body = {"quote_id": args.quote_id, "side": args.side}
        if args.quantity:
            body["quantity"] = args.quantity
        if args.limit_price:
            body["limit_price"] = args.limit_price
        trade = venue.api(config, "POST", f"rfqs/{args.rfq_id}/accept/", body)
        _print(args, f"{trade['id']} traded on {trade['rfq_id']}", trade)
    elif args.rfq_command == "cancel":
        rfq = venue.api(config, "POST", f"rfqs/{args.rfq_id}/cancel/")
        _print(args, _rfq_line(rfq), rfq)
    elif args.rfq_command == "watch":
        return watch(args, config)
    return 0


def watch(args: argparse.Namespace, config: Config) -> int:
    """Follows the event feed (Server-Sent Events), one line per event, until interrupted or,
    with ``--count``, that many events. When the venue refuses another stream for this
    certificate (STREAM_LIMIT: two at a time), it follows the long-poll instead."""
    try:
        return _show(args, venue.stream(config, args.since))
    except venue.VenueError as exc:
        if exc.code != "STREAM_LIMIT":
            raise
        log.info("%s; following the long-poll instead", exc.message)
        return _show(args, venue.long_poll(config, args.since))


def _show(args: argparse.Namespace, events: Iterator[dict[str, Any]]) -> int:
    for seen, event in enumerate(events, start=1):
        data = event["data"]
        thing = data.get("rfq") or data.get("quote") or data.get("trade") or {}
        _print(args, f"{event['seq']} {event['type']} {thing.get('id', '')}", event)
        if args.count is not None and seen >= args.count:
            break
    return 0


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (``keyline --json whoami`` and
    ``keyline whoami --json`` alike)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="the configuration file (default: $KEYLINE_CONFIG or ~/.config/keyline/client.toml)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help='print the venue\'s JSON answers (and refusals as {"error": …}) on stdout',
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log more"
    )
    return common


def parser() -> argparse.ArgumentParser:
    common = _common()
    top = argparse.ArgumentParser(
        prog="keyline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    commands = top.add_subparsers(dest="command", required=True)

    def command(parent: Any, name: str, text: str) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = parent.add_parser(
            name, help=text, description=text, parents=[common]
        )
        return made

    enroll = command(commands, "enroll", "the first certificate, with a one-time enrollment token")
    given = enroll.add_mutually_exclusive_group()
    given.add_argument("--token", help="the token (or $KEYLINE_ENROLLMENT_TOKEN)")
    given.add_argument("--token-file", help="a file holding the token (kept out of ps and history)")
    enroll.add_argument(
        "--wait", type=float, default=0, help="seconds to keep asking while an officer signs"
    )
    enroll.add_argument(
        "--replace", action="store_true", help="enroll even though cert_file exists (a new machine)"
    )
    enroll.set_defaults(run=cmd_enroll)

    renew = command(commands, "renew", "re-enroll with a new key inside the renewal window")
    renew.add_argument(
        "--force", action="store_true", help="ask even if renew_before is not reached here"
    )
    renew.add_argument(
        "--wait", type=float, default=0, help="seconds to keep asking while an officer signs"
    )
    renew.add_argument("--daemon", action="store_true", help="keep checking, and renew when due")
    renew.add_argument(
        "--interval", type=float, default=3600, help="daemon: seconds between checks (3600)"
    )
    renew.set_defaults(run=cmd_renew)

    whoami = command(commands, "whoami", "who the venue says this certificate is")
    whoami.set_defaults(run=cmd_whoami)

    rfq = command(commands, "rfq", "requests for quotes")
    rfq_commands = rfq.add_subparsers(dest="rfq_command", required=True)
    create = command(rfq_commands, "create", "ask for quotes")
    create.add_argument("instrument")
    create.add_argument("side", choices=["buy", "sell"])
    create.add_argument("quantity")
    create.add_argument(
        "--leg",
        nargs=2,
        action="append",
        metavar=("INSTRUMENT", "SIDE"),
        help="another leg (repeat for more)",
    )
    create.add_argument("--expires-in", type=int, help="seconds the RFQ stays open")
    quote = command(rfq_commands, "quote", "quote on an RFQ (one side or both)")
    quote.add_argument("rfq_id")
    quote.add_argument("--bid", help="the price you buy at")
    quote.add_argument("--ask", help="the price you sell at")
    quote.add_argument("--size", required=True, help="the quantity of each side")
    accept = command(rfq_commands, "accept", "trade on a quote of your RFQ")
    accept.add_argument("rfq_id")
    accept.add_argument("quote_id")
    accept.add_argument(
        "side", choices=["buy", "sell"], help="buy lifts the ask, sell hits the bid"
    )
    accept.add_argument("--quantity", help="less than the RFQ's quantity")
    accept.add_argument("--limit-price", help="the worst price you accept")
    cancel = command(rfq_commands, "cancel", "cancel your RFQ")
    cancel.add_argument("rfq_id")
    watch_ = command(rfq_commands, "watch", "follow your event feed")
    watch_.add_argument(
        "--since",
        type=int,
        default=0,
        help="events after this seq (default 0: every event you can see, then new ones)",
    )
    watch_.add_argument("--count", type=int, help="stop after this many events")
    rfq.set_defaults(run=cmd_rfq)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for name in ("config", "json", "verbose"):
        if not hasattr(args, name):
            setattr(args, name, None if name == "config" else False)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s keyline %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        config = load(args.config)
        return int(args.run(args, config))
    except ConfigError as exc:
        print(f"error: CONFIG: {exc}", file=sys.stderr)
    except venue.VenueError as exc:
        if args.json:
            print(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        print(f"error: {exc}", file=sys.stderr)
    except venue.httpx.HTTPError as exc:
        print(f"error: CONNECTION: {exc}", file=sys.stderr)
    except (OSError, ValueError) as exc:  # files here: unreadable, or a key and cert that differ
        print(f"error: LOCAL: {type(exc).__name__}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
