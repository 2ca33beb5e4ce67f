"""The caIssuers URL written into every certificate serves the issuer's certificate."""

from urllib.parse import urlsplit

import pytest
from cryptography import x509
from django.test import Client

from tests.keys import make_csr

pytestmark = pytest.mark.django_db


def test_ca_issuers_url_in_a_leaf_serves_its_issuer_as_der(participant, issue, cas):
    leaf = x509.load_pem_x509_certificate(issue(participant, make_csr()).pem.encode())
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    url = next(
        d.access_location.value
        for d in aia
        if d.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS
    )
    path = urlsplit(url).path

    response = Client().get(path)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-cert"
    issuer = x509.load_der_x509_certificate(response.content)
    assert issuer.subject == leaf.issuer
    leaf.verify_directly_issued_by(issuer)


@pytest.mark.parametrize("slug", ["nope", "root-ca"])
def test_unknown_ca_is_404(slug, cas):
    assert Client().get(f"/pki/ca/{slug}.crt").status_code == 404


def test_inactive_ca_is_404(cas):
    cas["server"].is_active = False
    cas["server"].save()
    assert Client().get("/pki/ca/server-ca.crt").status_code == 404


def test_only_get(cas):
    assert Client().post("/pki/ca/root.crt").status_code == 405
