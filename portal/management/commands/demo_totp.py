"""The current TOTP code of a demo officer (the one whose device seed_demo made), so the
demo can be tried without an authenticator app. Refuses every other device."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.management.commands.seed_demo import TOTP_DEVICE


class Command(BaseCommand):
    help = "Print the current second-factor code of a demo officer."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        device = TOTPDevice.objects.filter(user__username=username, name=TOTP_DEVICE).first()
        if device is None:
            raise CommandError(f"{username} has no demo authenticator (made by seed_demo)")
        self.stdout.write(
            f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"
        )
