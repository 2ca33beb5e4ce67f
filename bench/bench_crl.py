"""CRL build time and size for the client CA with 1k, 10k and 100k revoked entries.

    .venv/bin/python bench/bench_crl.py                  # PostgreSQL database keyline_bench
    .venv/bin/python bench/bench_crl.py --sizes 1000,10000,100000 --repeat 3
    .venv/bin/python bench/bench_crl.py --database-url sqlite:///tmp/crl.sqlite3

The revoked rows are bulk-inserted copies of one really issued certificate (random 159-bit
serials, fresh fingerprints, a mix of reasons, every 10th with an invalidity date). Timed:
``crl_publish`` end to end (read, build and sign the CRL of every active CA, store them, audit,
write the DER files and bundle.pem) and ``crl_build`` alone for the client CA (read + build +
sign). The database named in a PostgreSQL URL is dropped, created and dropped again.
"""

import argparse
import secrets
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import _common

REASONS = ["key_compromise", "superseded", "cessation_of_operation", "affiliation_changed",
           "privilege_withdrawn", "unspecified"]  # fmt: skip


def add_revoked(template, count: int) -> None:
    """Insert ``count`` revoked rows modelled on ``template`` (an issued client certificate)."""
    from django.utils import timezone

    from pki.models import Certificate

    now = timezone.now()
    rows = []
    for i in range(count):
        revoked_at = now - timedelta(seconds=secrets.randbelow(30 * 86400))
        rows.append(
            Certificate(
                kind=template.kind,
                issuer_id=template.issuer_id,
                participant_id=template.participant_id,
                serial=f"{secrets.randbits(159) | 1 << 100:x}",
                fingerprint_sha256=secrets.token_hex(32),
                spki_sha256=secrets.token_hex(32),
                subject=template.subject,
                san=template.san,
                not_before=template.not_before,
                not_after=template.not_after,
                status=Certificate.Status.REVOKED,
                revoked_at=revoked_at,
                revocation_reason=REASONS[i % len(REASONS)],
                invalidity_date=revoked_at - timedelta(days=1) if i % 10 == 0 else None,
                pem=template.pem,
            )
        )
    Certificate.objects.bulk_create(rows, batch_size=5000)


def measure(repeat: int) -> dict:
    from cryptography.hazmat.primitives import serialization
    from django.utils import timezone

    from kernel.audit import Actor
    from pki import revocation
    from pki.keystore import ca_dir, ca_key_load
    from pki.models import CertificateAuthority
    from pki.revocation import crl_build, crl_publish

    ca = CertificateAuthority.objects.get(kind="client", is_active=True)
    key = ca_key_load(ca.key_file)
    publish, build = [], []
    # Cold: the publishing process has no built entries yet (a fresh worker); the later runs
    # reuse them, as a long-running worker does for every rebuild after a revocation.
    revocation._entries.clear()
    started = time.perf_counter()
    crl_publish(actor=Actor.system("bench"))
    cold = time.perf_counter() - started
    for _ in range(repeat):
        started = time.perf_counter()
        rows = crl_publish(actor=Actor.system("bench"))
        publish.append(time.perf_counter() - started)
        started = time.perf_counter()
        crl, entries = crl_build(ca=ca, number=10**9, this_update=timezone.now(), key=key)
        crl.public_bytes(serialization.Encoding.DER)
        build.append(time.perf_counter() - started)
    client = next(row for row in rows if row.ca_id == ca.pk)
    assert client.entries == entries, (client.entries, entries)
    return {
        "entries": entries,
        "cold": cold,
        "publish": statistics.median(publish),
        "build": statistics.median(build),
        "stored_build": client.build_seconds,
        "der": len(client.der),
        "bundle": (ca_dir() / "crl" / "bundle.pem").stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=_common.DEFAULT_DATABASE_URL)
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (median shown)")
    parser.add_argument("--key-type", choices=["ec-p256", "rsa-3072"], default="ec-p256")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    workdir = Path(tempfile.mkdtemp(prefix="keyline-bench-crl-"))
    postgres = args.database_url.startswith("postgres")
    if postgres:
        _common.reset_postgres(args.database_url)
    try:
        _common.configure(_common.bench_env(args.database_url, str(workdir / "ca")))
        template = _common.issue(_common.prepare(args.key_type))
        print(
            f"db={'postgresql' if postgres else 'sqlite'} ca={args.key_type} repeat={args.repeat}"
        )
        print(
            "| revoked entries | crl_publish, fresh worker (s) | crl_publish (s) | crl_build (s) "
            "| DER size | bundle.pem size |"
        )
        print("|---|---|---|---|---|---|")
        have = 0
        for size in sizes:
            started = time.perf_counter()
            add_revoked(template, size - have)
            inserted = time.perf_counter() - started
            have = size
            r = measure(args.repeat)
            print(
                f"| {r['entries']:,} | {r['cold']:.3f} | {r['publish']:.3f} | {r['build']:.3f} "
                f"| {r['der']:,} B | {r['bundle']:,} B |"
                f"  (insert {inserted:.1f} s; build as stored {r['stored_build']:.3f} s)",
                flush=True,
            )
    finally:
        from django.db import connections

        connections.close_all()
        if postgres:
            _common.reset_postgres(args.database_url, create=False)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
