"""What happened to certificates, announced by the modules that did it, for whatever must
follow once it is committed.

``pki.services`` (issuance) and ``pki.revocation`` (status changes) sit below the Celery tasks
and the caches they would have to touch, so they do not call them: they send one of these
signals from ``transaction.on_commit``, and ``pki.propagation`` (above them, connected by
``PkiConfig.ready``) receives it. Both are sent with ``sender=Certificate`` and
``certificates``, a list of the committed rows. A receiver that raises reaches the sender, as
any ``on_commit`` callback does: the receivers here isolate and record each of their steps.
"""

from django.dispatch import Signal

# New certificates were issued (committed): their "good" OCSP answers can be pre-signed.
certificates_issued = Signal()

# Certificates changed status (revoked; committed): caches and CRLs must follow.
certificates_status_changed = Signal()
