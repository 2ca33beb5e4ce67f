"""What bench_crl.py, bench_ocsp.py and bench_revocation.py share: the environment, a
throwaway PostgreSQL database and CA, issuing a client certificate, and child processes
(gunicorn, celery, openssl) that are stopped by their process group when the bench ends."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/keyline_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"  # a Redis database of its own, flushed
PASSPHRASE = "bench-ca-passphrase-0123456789"  # noqa: S105 - a throwaway CA
OCSP_PASSPHRASE = "bench-ocsp-passphrase-0123456789"  # noqa: S105
OCSP_PATH = "/pki/ocsp"  # the path of the default KEYLINE_OCSP_URL
VENV_BIN = ROOT / ".venv" / "bin"


# What the benches run besides Python, and the Debian package that has it.
TOOLS = {
    "ab": "apache2-utils",
    "node": "nodejs",
    "nginx": "nginx",
    "openssl": "openssl",
    "redis-server": "redis-server",
    "unshare": "util-linux",
    "ip": "iproute2",
}


def require(*tools: str) -> None:
    """Make sure each tool is installed: install its Debian package when running as root with
    apt-get (as bin/test does for nginx and Chromium), otherwise stop with the command that
    would. A bench never dies of a missing tool with a traceback."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    packages = sorted({TOOLS[tool] for tool in missing})
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {', '.join(packages)} (for {', '.join(missing)})", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", *packages], env=env, check=False,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    still = [tool for tool in missing if shutil.which(tool) is None]
    if still:
        sys.exit(f"this bench needs {', '.join(still)}: apt-get install {' '.join(packages)}")


def bench_env(database_url: str, ca_dir: str, redis_url: str = "", **extra: str) -> dict:
    """The environment of the bench process and of every server it starts."""
    env = {
        "DJANGO_SETTINGS_MODULE": "keyline.settings",
        "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-production-use",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url,
        "KEYLINE_CA_DIR": ca_dir,
        "KEYLINE_CA_PASSPHRASE": PASSPHRASE,
        "KEYLINE_OCSP_KEY_PASSPHRASE": OCSP_PASSPHRASE,
        "KEYLINE_LINT_BEFORE_SIGNING": "0",  # setup speed only: nothing timed issues
        "REDIS_URL": redis_url,
        **extra,
    }
    return {**os.environ, **env}


def configure(env: dict) -> None:
    os.environ.update(env)
    import django

    django.setup()


def reset_postgres(database_url: str, create: bool = True) -> None:
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    if "@//" in admin:
        # The unix-socket form the settings read (postgres://USER@//SOCKET_DIR/NAME), which
        # libpq's URIs do not: as key=value pairs.
        user, socket_dir = admin.split("://", 1)[1].split("@//", 1)
        admin = f"host=/{socket_dir.rsplit('/', 1)[0]} user={user} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def prepare_firm(key_type: str = "ec-p256", participants: int = 1) -> list:
    """Migrate, create the CA hierarchy (with its OCSP delegate), an approved firm and
    ``participants`` requesters (bench-0, bench-1, ...)."""
    from django.core.management import call_command

    from kernel.audit import Actor
    from kernel.lei import lei_with_check_digits
    from kernel.models import Firm, Participant
    from pki.services import ca_init

    call_command("migrate", verbosity=0)
    ca_init(key_type=key_type, force=True, actor=Actor.system("bench"))
    firm = Firm.objects.create(
        legal_name="Bench Firm Ltd",
        lei=lei_with_check_digits("984500BENCHFIRM001"),
        jurisdiction="GB",
        role=Firm.Role.BOTH,
        status=Firm.Status.APPROVED,
    )
    return [
        Participant.objects.create(
            firm=firm,
            trader_id=f"bench-{i}",
            name=f"Bench {i}",
            email=f"b{i}@x.example",
            role=Participant.Role.REQUESTER,
        )
        for i in range(participants)
    ]


def prepare(key_type: str = "ec-p256"):
    """Migrate, create the CA hierarchy and one participant."""
    return prepare_firm(key_type)[0]


def issue(participant, name: str = "bench-leaf"):
    """A client certificate for a fresh EC P-256 key, through the service layer."""
    return issue_with_key(participant, name)[0]


def issue_with_key(participant, name: str = "bench-leaf"):
    """(certificate row, its private key as PKCS#8 PEM): what a trader holds."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from kernel.audit import Actor
    from pki.services import certificate_issue, csr_submit

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    actor = Actor.system("bench")
    pem = csr.public_bytes(serialization.Encoding.PEM)
    request = csr_submit(participant=participant, data=pem, actor=actor)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate_issue(request=request, actor=actor), key_pem


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """Start a server in a process group of its own (not a session: `openssl ocsp -multi`
    calls setpgid(), which a session leader may not), stopped with :func:`stop`)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, process_group=0
        )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start_gunicorn(env: dict, port: int, log: Path) -> subprocess.Popen:
    args = [
        str(VENV_BIN / "gunicorn"),
        "keyline.wsgi:application",
        "-w",
        "2",
        "--no-control-socket",
    ]
    return start([*args, "-b", f"127.0.0.1:{port}"], env, log)


def start_uvicorn(env: dict, port: int, log: Path) -> subprocess.Popen:
    """The production OCSP responder, pki.ocsp_asgi, as deploy/ runs it."""
    args = [str(VENV_BIN / "uvicorn"), "pki.ocsp_asgi:application", "--workers", "2",
            "--http", "httptools", "--loop", "uvloop", "--no-access-log"]  # fmt: skip
    return start([*args, "--host", "127.0.0.1", "--port", str(port)], env, log)


def ocsp_post(url: str, der: bytes, timeout: float = 5.0) -> bytes:
    headers = {"Content-Type": "application/ocsp-request"}
    request = urllib.request.Request(url, data=der, headers=headers)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return response.read()


def wait_ocsp(url: str, der: bytes, proc: subprocess.Popen, log: Path, seconds: float = 30):
    """Wait until the responder at ``url`` answers ``der``; returns its answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            sys.exit(f"{' '.join(proc.args)} exited with {proc.returncode}:\n{tail}")
        try:
            return ocsp_post(url, der, timeout=2)
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} did not answer in {seconds:.0f} s:\n{log.read_text(errors='replace')[-2000:]}")
