"""Create a compliance officer: a staff user with a TOTP device. Prints the one-time password
and the otpauth:// URI to add to an authenticator app, once; neither is stored in clear."""

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from kernel.audit import audit_record
from pki.services import command_actor


class Command(BaseCommand):
    help = "Create a compliance officer with a TOTP second factor."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", required=True)

    def handle(self, *args: Any, username: str, email: str, **options: Any) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(username__iexact=username).exists():
            raise CommandError(f"user_exists: {username} already exists")
        password = secrets.token_urlsafe(15)
        with transaction.atomic():
            user = user_model.objects.create_user(
                username, email=email, password=password, is_staff=True
            )
            device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
            audit_record(
                event="officer.created", actor=command_actor("add_officer"), target=user,
                username=username,
            )  # fmt: skip
        self.stdout.write(f"officer {username} created")
        self.stdout.write(f"password (change it at first sign-in): {password}")
        self.stdout.write(f"authenticator (otpauth URI, show as a QR code): {device.config_url}")
