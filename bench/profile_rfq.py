"""Where an RFQ API request spends its time, in-process: cProfile over N requests of one kind
through the whole Django/DRF stack (as nginx would forward them), and the SQL of one of them.

    .venv/bin/python bench/profile_rfq.py --request create --count 500
    .venv/bin/python bench/profile_rfq.py --request list --sort tottime

Uses the same world as bench_rfq.py (PostgreSQL database keyline_bench_prof, dropped and
created; Redis db 7, flushed). Not a benchmark: a profile slows everything it measures.
"""

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
import bench_rfq

DATABASE_URL = "postgres://postgres@127.0.0.1:5432/keyline_bench_prof"
REDIS_URL = "redis://127.0.0.1:6379/7"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--request", choices=["create", "quote", "list", "auth"], default="create")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--sort", default="cumulative", help="pstats sort key")
    parser.add_argument("--lines", type=int, default=45)
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="keyline-profile-rfq-"))
    _common.reset_postgres(args.database_url)
    _common.flush_redis(args.redis_url)
    env = _common.bench_env(
        args.database_url,
        str(workdir / "ca"),
        args.redis_url,
        DJANGO_SETTINGS_MODULE="bench_settings",
        KEYLINE_TERMINATOR_SECRET=bench_rfq.TERMINATOR_SECRET,
        KEYLINE_API_RATE_SCALE="100000",
    )
    _common.configure(env)
    try:
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from kernel.audit import Actor
        from kernel.models import Firm
        from pki.services import ca_init

        call_command("migrate", verbosity=0)
        ca_init(key_type="ec-p256", force=True, actor=Actor.system("profile"))
        bench_rfq.instruments()
        requester = bench_rfq.desk(
            bench_rfq.firm(1, "Profile Client Ltd", Firm.Role.CLIENT), "p-requester", workdir
        )
        maker = bench_rfq.desk(
            bench_rfq.firm(2, "Profile LP Ltd", Firm.Role.LIQUIDITY_PROVIDER), "p-maker", workdir
        )
        api = bench_rfq.API
        if args.request == "create":
            who, method, path, body = requester, "post", api + "rfqs/", bench_rfq.ONE_LEG
            paths = [path] * args.count
        elif args.request == "quote":
            targets = bench_rfq.create_rfqs(requester, args.count + 1, expires_in=600)
            who, method, body = maker, "post", bench_rfq.TWO_WAY
            paths = [f"{api}rfqs/{r.pk}/quotes/" for r in targets]
        elif args.request == "list":
            bench_rfq.create_rfqs(requester, 100)
            who, method, body = requester, "get", None
            paths = [api + "rfqs/?limit=50"] * args.count
        else:
            who, method, body = requester, "get", None
            paths = [api + "bench/auth/"] * args.count
        client = who.client()

        def call(path: str) -> int:
            if method == "get":
                return client.get(path).status_code
            return client.post(path, json.dumps(body), content_type="application/json").status_code

        for path in paths[:20]:  # warm: caches, connections, imports
            call(path)
        with CaptureQueriesContext(connection) as queries:
            status = call(paths[-1])
        print(f"{args.request}: status {status}, {len(queries)} SQL statements:")
        for query in queries:
            print("  ", query["sql"][:160])
        profile = cProfile.Profile()
        profile.enable()
        for path in paths[20:]:
            call(path)
        profile.disable()
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out).strip_dirs().sort_stats(args.sort)
        stats.print_stats(args.lines)
        print(out.getvalue())
    finally:
        from django.db import connections

        connections.close_all()
        _common.reset_postgres(args.database_url, create=False)
        _common.flush_redis(args.redis_url)


if __name__ == "__main__":
    main()
