"""The client certificate profile (docs/pki.md): subject and SAN from the verified records, the
CSR contributing only its public key."""

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.db import IntegrityError
from django.utils import timezone

from kernel.errors import Conflict
from kernel.models import AuditRecord, Firm
from pki import crypto
from pki.csr import CSR_KEY_REUSED, CsrRejected
from pki.models import Certificate, CertificateRequest
from pki.services import CertificateLintFailed, _sign_linted, certificate_issue, csr_submit
from tests.factories import certificate_row_like
from tests.keys import ec_key, make_csr

pytestmark = pytest.mark.django_db


def _parsed(certificate: Certificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certificate.pem.encode())


def test_profile_comes_from_records_and_ignores_requested_extensions(participant, issue, cas):
    hostile = make_csr(
        common_name="root-admin",
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("evil.example"),
                        x509.UniformResourceIdentifier("urn:keyline:firm:X:trader:boss"),
                    ]
                ),
                False,
            ),
            (
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]
                ),
                False,
            ),
            (x509.KeyUsage(True, False, False, False, False, True, True, False, False), True),
        ],
    )
    certificate = issue(participant, hostile)
    cert = _parsed(certificate)
    ext = cert.extensions

    assert cert.version == x509.Version.v3
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == participant.trader_id
    )
    assert (
        cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
        == participant.firm.legal_name
    )
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value
        == participant.firm.jurisdiction
    )
    san = ext.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:keyline:firm:{participant.firm.lei}:trader:{participant.trader_id}"
    ]
    assert san.value.get_values_for_type(x509.DNSName) == []
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not (ku.value.key_cert_sign)
    assert not (ku.value.crl_sign)
    assert not (ku.value.key_encipherment)
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert ext.get_extension_for_class(
        x509.AuthorityKeyIdentifier
    ).value.key_identifier == bytes.fromhex(cas["client"].ski)
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    # The distribution URLs are the issuing CA's, as recorded on its row.
    cdp = ext.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
    assert cdp == cas["client"].crl_url
    assert cdp.endswith("/crl/client-ca.crl")
    aia = {
        d.access_method: d.access_location.value
        for d in ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    }
    assert aia[x509.AuthorityInformationAccessOID.OCSP] == cas["client"].ocsp_url
    assert aia[x509.AuthorityInformationAccessOID.CA_ISSUERS] == cas["client"].ca_issuers_url
    assert cas["client"].ca_issuers_url.endswith("/ca/client-ca.crt")
    assert cert.signature_hash_algorithm.name == "sha256"
    # The request keeps what was asked for, for the officer to see.
    request = CertificateRequest.objects.get(certificate=certificate)
    assert any("basicConstraints" in e for e in request.requested_extensions)
    assert certificate.san == [participant.san_uri]


def test_default_validity_is_90_days_and_stored_fields_match(participant, issue):
    before = timezone.now()
    certificate = issue(participant, make_csr())
    cert = _parsed(certificate)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=90) <= lifetime <= timedelta(days=90, minutes=6)
    assert cert.not_valid_before_utc <= before
    assert certificate.serial == format(cert.serial_number, "x")
    assert certificate.fingerprint_sha256 == crypto.fingerprint_sha256(cert)
    assert certificate.not_after == cert.not_valid_after_utc
    assert certificate.status == Certificate.Status.ACTIVE
    assert certificate.participant == participant


def test_validity_can_be_shortened_and_never_outlives_the_ca(participant, issue, cas):
    assert (
        _parsed(issue(participant, make_csr(), validity_days=7)).not_valid_after_utc
        - timezone.now()
    ) < timedelta(days=7, minutes=1)
    far = _parsed(issue(participant, make_csr(), validity_days=825))
    assert far.not_valid_after_utc <= cas["client"].not_after


def test_issuance_is_audited_with_the_actor(participant, issue):
    certificate = issue(participant, make_csr())
    record = AuditRecord.objects.filter(event="certificate.issued").order_by("-id").first()
    assert record.details["serial"] == certificate.serial
    assert record.details["trader_id"] == participant.trader_id
    assert record.actor_label == "test"


@pytest.mark.parametrize("change", ["PARTICIPANT_DISABLED", "firm_suspended", "firm_applied"])
def test_inactive_participant_or_firm_gets_no_certificate(change, participant, system_actor):
    request = csr_submit(participant=participant, data=make_csr(), actor=system_actor)
    if change == "PARTICIPANT_DISABLED":
        participant.is_active = False
        participant.save()
    else:
        participant.firm.status = (
            Firm.Status.SUSPENDED if change == "firm_suspended" else Firm.Status.APPLIED
        )
        participant.firm.save()
    with pytest.raises(Conflict) as refused:
        certificate_issue(request=request, actor=system_actor)
    assert refused.value.code == "PARTICIPANT_INACTIVE"
    assert not Certificate.objects.filter(participant=participant).exists()


def test_a_request_is_signed_once(participant, system_actor):
    request = csr_submit(participant=participant, data=make_csr(), actor=system_actor)
    certificate_issue(request=request, actor=system_actor)
    with pytest.raises(Conflict) as refused:
        certificate_issue(request=request, actor=system_actor)
    assert refused.value.code == "CSR_NOT_PENDING"
    assert Certificate.objects.filter(participant=participant).count() == 1


def test_two_pending_requests_with_one_key_yield_one_certificate(firm, system_actor):
    """The key-history check at issuance rejects the second request; the database constraint
    backs it up under concurrency."""
    from tests.factories import ParticipantFactory

    key = ec_key()
    first = csr_submit(
        participant=ParticipantFactory(firm=firm), data=make_csr(key), actor=system_actor
    )
    second = CertificateRequest.objects.create(
        participant=ParticipantFactory(firm=firm),
        csr_pem=first.csr_pem,
        spki_sha256=first.spki_sha256,
        key_description=first.key_description,
    )
    certificate_issue(request=first, actor=system_actor)
    with pytest.raises(CsrRejected) as refused:
        certificate_issue(request=second, actor=system_actor)
    assert refused.value.code == CSR_KEY_REUSED
    second.refresh_from_db()
    assert second.status == CertificateRequest.Status.REJECTED
    assert second.rejection_code == CSR_KEY_REUSED


def test_database_refuses_a_second_client_certificate_for_one_key(participant, issue):
    certificate = issue(participant, make_csr())
    clone = certificate_row_like(certificate, spki_sha256=certificate.spki_sha256)
    with pytest.raises(IntegrityError):
        clone.save()


def test_pre_issuance_lint_blocks_a_bad_profile_and_nothing_is_signed(cas):
    """A to-be-signed certificate with a critical AKI (RFC 5280 §4.2.1.1 forbids it) is refused
    by pkilint before the CA key signs anything."""
    key = ec_key()
    now = timezone.now()
    name = crypto.name(common_name="broken", organization="Test")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(crypto.random_serial())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=True
        )
    )
    with pytest.raises(CertificateLintFailed) as refused:
        _sign_linted(builder, key)
    assert any("authority_key_identifier_critical" in f for f in refused.value.details["findings"])


def test_batch_issue_gives_one_outcome_per_request_in_order(firm, system_actor):
    """The signing worker's batch path: good requests are signed, the others are refused
    with their codes, and the audit chain stays intact."""
    from django.utils import timezone

    from kernel.audit import audit_verify
    from pki.services import certificates_issue
    from tests.factories import ParticipantFactory

    def submit(participant, key=None):
        return csr_submit(
            participant=participant, data=make_csr(key or ec_key()), actor=system_actor
        )

    good = [submit(ParticipantFactory(firm=firm)) for _ in range(3)]
    done = submit(ParticipantFactory(firm=firm))
    certificate_issue(request=done, actor=system_actor)
    disabled = ParticipantFactory(firm=firm, is_active=False)
    inactive = submit(disabled)
    compromised_key = ec_key()
    old = certificate_issue(
        request=submit(ParticipantFactory(firm=firm), compromised_key), actor=system_actor
    )
    old.mark_revoked(reason=Certificate.Reason.KEY_COMPROMISE, at=timezone.now())
    old.save()
    compromised = CertificateRequest.objects.create(
        participant=ParticipantFactory(firm=firm),
        csr_pem=make_csr(compromised_key).decode(),
        spki_sha256=old.spki_sha256,
        key_description="EC-secp256r1",
    )
    shared = ec_key()
    twin_a = submit(ParticipantFactory(firm=firm), shared)
    twin_b = CertificateRequest.objects.create(
        participant=ParticipantFactory(firm=firm),
        csr_pem=twin_a.csr_pem,
        spki_sha256=twin_a.spki_sha256,
        key_description=twin_a.key_description,
    )
    batch = [good[0], done, inactive, good[1], compromised, twin_a, twin_b, good[2]]

    outcomes = certificates_issue(requests=batch, actor=system_actor)

    assert [o.request_id for o in outcomes] == [r.pk for r in batch]
    codes = [o.error.code if o.error else "issued" for o in outcomes]
    assert codes == [
        "issued",
        "CSR_NOT_PENDING",
        "PARTICIPANT_INACTIVE",
        "issued",
        "CSR_KEY_COMPROMISED",
        "issued",
        "CSR_KEY_REUSED",
        "issued",
    ]
    for outcome in outcomes:
        if outcome.certificate:
            assert (
                Certificate.objects.get(pk=outcome.certificate.pk).request_id == outcome.request_id
            )
    assert CertificateRequest.objects.get(pk=inactive.pk).status == "submitted"
    assert CertificateRequest.objects.get(pk=twin_b.pk).rejection_code == "CSR_KEY_REUSED"
    issued_audit = AuditRecord.objects.filter(event="certificate.issued").order_by("-id")[:4]
    assert {int(r.target_id) for r in issued_audit} == {
        o.certificate.pk for o in outcomes if o.certificate
    }
    assert audit_verify().ok
