"""Portal users: officers with a TOTP device (signed in with both factors), firm users."""

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

PASSWORD = "correct horse battery 9"


def totp_now(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"


def sign_in(client: Client, username: str, password: str = PASSWORD) -> None:
    response = client.post("/accounts/login/", {"username": username, "password": password})
    assert response.status_code == 302, response.content


@pytest.fixture
def make_officer(db):
    """``make_officer(name, verified=True) -> (client, user)``: a staff user with a confirmed
    TOTP device, signed in with its password and (unless ``verified=False``) its code."""

    def _make(name: str, *, verified: bool = True) -> tuple[Client, User]:
        user = User.objects.create_user(name, f"{name}@venue.example", PASSWORD, is_staff=True)
        device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
        client = Client()
        sign_in(client, name)
        if verified:
            response = client.post("/accounts/verify/", {"token": totp_now(device)})
            assert response.status_code == 302, response.content
        return client, user

    return _make


def verify_session(client: Client, user: User) -> TOTPDevice:
    """Give ``user`` a confirmed TOTP device and mark ``client``'s session as verified with
    it, as django_otp.login does (without spending a code, which a second login in the same
    30 s could not reuse)."""
    from django_otp import DEVICE_ID_SESSION_KEY

    device, _ = TOTPDevice.objects.get_or_create(
        user=user, confirmed=True, defaults={"name": "phone"}
    )
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return device
