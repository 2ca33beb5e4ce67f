"""What follows an issuance or a status change once it commits (``pki.propagation``, reached
through the ``pki.events`` signals), the Celery tasks' registered names, and the shape of the
pki package: its modules import each other one way, at module level."""

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings

from keyline.celery import app
from pki import events, propagation, tasks
from pki.models import Certificate, PublishFailure
from pki.revocation import certificate_revoke
from tests.keys import ec_key, make_csr

PKI = Path(__file__).resolve().parents[2] / "pki"
PROJECT_PACKAGES = ("kernel", "pki", "portal", "rfq", "keyline")


def test_tasks_keep_the_names_that_beat_and_routing_use():
    assert tasks.ocsp_responder_renew_task.name == "pki.tasks.ocsp_responder_renew_task"
    assert tasks.crl_publish_task.name == "pki.tasks.crl_publish_task"
    assert tasks.ocsp_presign_task.name == "pki.tasks.ocsp_presign_task"
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    pki_scheduled = {name for name in scheduled if name.startswith("pki.")}
    assert pki_scheduled == {
        "pki.tasks.ocsp_responder_renew_task",
        "pki.tasks.crl_publish_task",
        "pki.tasks.ocsp_presign_task",
        "pki.tasks.est_supersede_task",
    }
    assert pki_scheduled <= set(app.tasks)
    assert settings.CELERY_TASK_ROUTES["pki.tasks.*"] == {"queue": "signing"}


def test_the_events_are_received():
    assert events.certificates_status_changed.has_listeners(Certificate)
    assert events.certificates_issued.has_listeners(Certificate)


@pytest.mark.django_db
def test_every_step_after_a_revocation_runs_in_order_though_each_fails(
    participant, issue, system_actor, monkeypatch, django_capture_on_commit_callbacks
):
    leaf = issue(participant, make_csr(ec_key()))
    calls = []

    def failing(name):
        def step(*args, **kwargs):
            calls.append((name, kwargs))
            raise RuntimeError(f"{name} is down")

        return step

    monkeypatch.setattr(propagation, "decisions_forget", failing("trust"))
    monkeypatch.setattr(propagation, "ocsp", SimpleNamespace(responses_forget=failing("ocsp")))
    monkeypatch.setattr(
        propagation,
        "tasks",
        SimpleNamespace(
            crl_publish_task=SimpleNamespace(delay=failing("crl")),
            ocsp_presign_task=SimpleNamespace(delay=failing("presign")),
            ocsp_responder_renew_task=SimpleNamespace(delay=failing("renew")),
        ),
    )
    with django_capture_on_commit_callbacks(execute=True):
        certificate_revoke(certificate=leaf, reason="superseded", actor=system_actor)

    leaf.refresh_from_db()
    assert leaf.status == Certificate.Status.REVOKED
    assert calls == [
        ("trust", {}),
        ("ocsp", {}),
        ("crl", {}),
        ("presign", {"serials": [leaf.serial]}),
    ]  # not the delegate: no renewal
    stages = PublishFailure.objects.order_by("pk").values_list("stage", "error")
    assert list(stages) == [
        ("cache", "RuntimeError: trust is down"),
        ("cache", "RuntimeError: ocsp is down"),
        ("enqueue", "RuntimeError: crl is down"),
        ("enqueue", "RuntimeError: presign is down"),
    ]


@pytest.mark.django_db
def test_issuance_stands_when_its_presign_cannot_be_queued(
    participant, issue, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []

    def down(**kwargs):
        queued.append(kwargs)
        raise RuntimeError("broker down")

    monkeypatch.setattr(
        propagation, "tasks", SimpleNamespace(ocsp_presign_task=SimpleNamespace(delay=down))
    )
    with django_capture_on_commit_callbacks(execute=True):
        cert = issue(participant, make_csr(ec_key()))
    assert queued == [{"serials": [cert.serial]}]
    assert Certificate.objects.filter(pk=cert.pk, status=Certificate.Status.ACTIVE).exists()
    assert not PublishFailure.objects.exists()  # not a publishing failure: signed on demand


def _function_level_project_imports(path: Path) -> set[tuple[str, str]]:
    """(file, function) of every import of a project package inside a function of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and inner.level == 0:
                names = [inner.module or ""]
            elif isinstance(inner, ast.Import):
                names = [alias.name for alias in inner.names]
            else:
                continue
            if any(name.split(".")[0] in PROJECT_PACKAGES for name in names):
                found.add((str(path.relative_to(PKI.parent)), node.name))
    return found


def test_pki_imports_project_modules_only_at_module_level():
    """No function-level import dodges an import cycle; the one exception is Django's idiom,
    ``PkiConfig.ready`` registering the checks and receivers."""
    found = set().union(*(_function_level_project_imports(p) for p in PKI.rglob("*.py")))
    assert found == {("pki/apps.py", "ready")}
