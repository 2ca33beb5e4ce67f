"""Certificates signed per second through the service layer (csr_submit + certificate_issue,
database writes and audit records included), for EC P-256 and RSA-3072 CA keys, with and
without pre-issuance linting. CSRs are made beforehand: that is the client's cost, not ours.

    .venv/bin/python bench/bench_signing.py                       # SQLite in a temp dir
    .venv/bin/python bench/bench_signing.py --database-url postgres://postgres@127.0.0.1:5432/keyline_bench
    .venv/bin/python bench/bench_signing.py --processes 2 --database-url postgres://...

With PostgreSQL the database named in the URL is dropped and created for the run.
"""

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _common  # noqa: E402


def _configure(database_url: str, ca_dir: str, lint: bool) -> None:
    """The shared bench environment (no Redis: tasks run in-process), linting as asked."""
    env = _common.bench_env(database_url, ca_dir, KEYLINE_LINT_BEFORE_SIGNING="1" if lint else "0")
    _common.configure(env)


def _make_csrs(count: int) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    csrs = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"b{i}")]))
            .sign(key, hashes.SHA256())
        )
        csrs.append(csr.public_bytes(serialization.Encoding.PEM))
    return csrs


def _sign_all(participant_id: int, csrs: list[bytes], batch: int = 0, barrier=None) -> list[float]:
    """batch=0: submit and issue each CSR in turn (the per-request path), timing both.
    batch=N: submit all first (untimed: that is the upload), then time the signing worker's
    certificates_issue over N requests at a time; latency is per batch / N."""
    from kernel.audit import Actor
    from kernel.models import Participant
    from pki.services import certificate_issue, certificates_issue, csr_submit

    participant = Participant.objects.select_related("firm").get(pk=participant_id)
    actor = Actor.system("bench")
    global _batch_started, _started_at
    latencies = []
    if not batch:
        if barrier is not None:
            barrier.wait()
        _started_at = time.time()
        for csr in csrs:
            started = time.perf_counter()
            request = csr_submit(participant=participant, data=csr, actor=actor)
            certificate_issue(request=request, actor=actor)
            latencies.append(time.perf_counter() - started)
        return latencies
    requests = [csr_submit(participant=participant, data=csr, actor=actor) for csr in csrs]
    if barrier is not None:
        barrier.wait()  # every worker starts signing at the same moment
    _batch_started, _started_at = time.perf_counter(), time.time()
    for i in range(0, len(requests), batch):
        started = time.perf_counter()
        outcomes = certificates_issue(requests=requests[i : i + batch], actor=actor)
        assert all(o.certificate for o in outcomes)
        latencies += [(time.perf_counter() - started) / len(outcomes)] * len(outcomes)
    return latencies


_batch_started = 0.0
_started_at = 0.0


def _worker(args: tuple) -> tuple[float, float, list[float]]:
    """Returns wall-clock start and end of the signing phase, and the latencies."""
    database_url, ca_dir, lint, participant_id, csrs, batch, barrier = args
    _configure(database_url, ca_dir, lint)
    latencies = _sign_all(participant_id, csrs, batch, barrier)
    return _started_at, time.time(), latencies


def _prepare(database_url: str, key_type: str, lint: bool, workdir: str, participants: int):
    from django.db import connection

    from kernel.audit import Actor
    from kernel.models import Participant
    from pki.services import certificate_issue, csr_submit

    ids = [p.pk for p in _common.prepare_firm(key_type, participants)]
    # Warm up: load the CA key and the linter once, as a long-lived worker would have.
    participant = Participant.objects.get(pk=ids[0])
    for csr in _make_csrs(5):
        certificate_issue(
            request=csr_submit(participant=participant, data=csr, actor=Actor.system("warm-up")),
            actor=Actor.system("warm-up"),
        )
    connection.close()
    return ids


def _reset_postgres(database_url: str) -> None:
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--key-type", choices=["ec-p256", "rsa-3072"], default="ec-p256")
    parser.add_argument("--lint", choices=["on", "off"], default="on")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--batch", type=int, default=0, help="sign N submitted requests per certificates_issue call"
    )
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="keyline-bench-")
    database_url = args.database_url or f"sqlite:///{workdir}/bench.sqlite3"
    if database_url.startswith("postgres"):
        _reset_postgres(database_url)
    lint = args.lint == "on"
    _configure(database_url, f"{workdir}/ca", lint)
    ids = _prepare(database_url, args.key_type, lint, workdir, args.processes)
    csrs = _make_csrs(args.count)
    chunks = [csrs[i :: args.processes] for i in range(args.processes)]

    if args.processes == 1:
        started = time.perf_counter()
        latencies = _sign_all(ids[0], csrs, args.batch)
        elapsed = time.perf_counter() - (_batch_started if args.batch else started)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Manager() as manager, ctx.Pool(args.processes) as pool:
            barrier = manager.Barrier(args.processes)
            jobs = [
                (database_url, f"{workdir}/ca", lint, ids[i], chunks[i], args.batch, barrier)
                for i in range(args.processes)
            ]
            # The workers start signing together (after start-up and, in batch mode, their
            # untimed submissions); the run lasts from the first start to the last end.
            results = pool.map(_worker, jobs)
        elapsed = max(end for _, end, _ in results) - min(start for start, _, _ in results)
        latencies = [x for _, _, chunk in results for x in chunk]

    from pki.models import Certificate

    issued = Certificate.objects.filter(kind="client").count() - 5
    assert issued == args.count, (issued, args.count)
    latencies.sort()
    engine = "postgresql" if database_url.startswith("postgres") else "sqlite"
    print(
        f"ca={args.key_type} lint={args.lint} db={engine} processes={args.processes} "
        f"mode={'batch' + str(args.batch) if args.batch else 'per-request'} "
        f"certificates={args.count} seconds={elapsed:.2f} rate={args.count / elapsed:.0f}/s "
        f"p50={statistics.median(latencies) * 1000:.2f}ms "
        f"p99={latencies[int(len(latencies) * 0.99) - 1] * 1000:.2f}ms"
    )


if __name__ == "__main__":
    main()
