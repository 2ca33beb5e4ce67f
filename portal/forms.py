"""Portal forms: shape and friendly messages. The rules themselves live in portal.services."""

from typing import Any, cast

from django import forms
from django.contrib.auth.password_validation import validate_password

from kernel.lei import validate_lei
from kernel.models import Firm, Participant
from portal.models import VerificationCheck

MAX_CSR_BYTES = 16 * 1024


class ApplicationForm(forms.ModelForm):
    class Meta:
        model = Firm
        fields = [
            "legal_name",
            "lei",
            "jurisdiction",
            "role",
            "contact_name",
            "contact_email",
            "contact_phone",
        ]
        labels = {"lei": "LEI (ISO 17442)", "jurisdiction": "Jurisdiction (ISO 3166 code)"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("contact_name", "contact_email", "contact_phone"):
            self.fields[name].required = True
        # Checked in clean_lei, after normalising: the field's validators would run first and
        # refuse a lower-case LEI that clean_lei means to accept.
        self.fields["lei"].validators = []

    def clean_lei(self) -> str:
        lei = self.cleaned_data["lei"].strip().upper()
        validate_lei(lei)
        return lei

    def clean_jurisdiction(self) -> str:
        jurisdiction: str = self.cleaned_data["jurisdiction"]
        return jurisdiction.strip().upper()

    def clean_contact_phone(self) -> str:
        phone: str = self.cleaned_data["contact_phone"].strip()
        if sum(c.isdigit() for c in phone) < 6 or any(c not in "+0123456789 ()-." for c in phone):
            raise forms.ValidationError("Enter a phone number, e.g. +44 20 7946 0000.")
        return phone


class CallbackCodeForm(forms.Form):
    code = forms.CharField(max_length=6, min_length=6, label="Code the officer read out")


class CheckForm(forms.Form):
    kind = forms.ChoiceField(choices=VerificationCheck.Kind.choices)
    outcome = forms.ChoiceField(choices=VerificationCheck.Outcome.choices)
    evidence = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=4000)


class DocumentForm(forms.Form):
    title = forms.CharField(max_length=200)
    file = forms.FileField()


class CallbackStartForm(forms.Form):
    phone = forms.CharField(max_length=40, label="Number you dialled")
    source = forms.CharField(max_length=300, label="Where you found it (registry, filing, website)")


class DecisionForm(forms.Form):
    """No choice is made for the officer: neither button starts selected."""

    decision = forms.ChoiceField(
        choices=[
            ("approve", "Approve: the firm becomes active and its administrator is invited"),
            ("reject", "Reject: the application is refused and the firm cannot trade"),
        ],
        widget=forms.RadioSelect,
        error_messages={"required": "Choose approve or reject."},
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)


class FirmStopForm(forms.Form):
    """Suspend or offboard: the reason, and the firm's legal name typed out as confirmation."""

    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)
    confirm_name = forms.CharField(max_length=200, label="Type the firm's legal name to confirm")


class FactorResetForm(forms.Form):
    """An officer removes a firm user's second factors: why, and how the person was checked."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
        label="Reason, and how you checked who asked (e.g. call-back to the registered number)",
    )


class RevokeForm(forms.Form):
    """The reason is chosen, never defaulted."""

    reason = forms.ChoiceField(
        choices=[
            ("", "— choose the reason —"),
            ("keyCompromise", "Key compromise"),
            ("affiliationChanged", "Trader left / changed role"),
            ("superseded", "Replaced by a new certificate"),
            ("cessationOfOperation", "No longer needed"),
            ("unspecified", "Unspecified"),
        ]
    )


class TokenForm(forms.Form):
    token = forms.CharField(max_length=6, min_length=6, label="Code from your authenticator app")


class InvitationAcceptForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[A-Za-z0-9_.@+-]{3,80}$",
        max_length=80,
        error_messages={"invalid": "3-80 letters, digits or _ . @ + -"},
    )
    password = forms.CharField(widget=forms.PasswordInput)
    password2 = forms.CharField(widget=forms.PasswordInput, label="Password again")

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean() returns
        if data.get("password") != data.get("password2"):
            raise forms.ValidationError("The passwords differ.")
        if data.get("password"):
            validate_password(data["password"])
        return data


class ParticipantForm(forms.ModelForm):
    class Meta:
        model = Participant
        fields = ["trader_id", "name", "email", "role"]

    def __init__(self, *args: Any, firm: Firm, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.firm = firm
        allowed = []
        if firm.requests_quotes:
            allowed.append(Participant.Role.REQUESTER)
        if firm.provides_liquidity:
            allowed.append(Participant.Role.LIQUIDITY_PROVIDER)
        role = cast(forms.ChoiceField, self.fields["role"])  # a model field with choices
        role.choices = [(r.value, r.label) for r in allowed]


class NoEchoTextarea(forms.Textarea):
    """Never renders the submitted text back: a paste refused for holding a private key must
    not come back in the page (and the CSR itself is quickly pasted again)."""

    def format_value(self, value: Any) -> None:
        return None


class CsrForm(forms.Form):
    csr_file = forms.FileField(required=False, label="CSR file (.csr / .pem)")
    csr_text = forms.CharField(
        required=False,
        widget=NoEchoTextarea(
            attrs={"rows": 8, "placeholder": "-----BEGIN CERTIFICATE REQUEST-----"}
        ),
        label="…or paste it",
        max_length=MAX_CSR_BYTES,
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean() returns
        upload, text = data.get("csr_file"), (data.get("csr_text") or "").strip()
        if bool(upload) == bool(text):
            raise forms.ValidationError("Upload a file or paste the CSR (one of the two).")
        if upload:
            if upload.size > MAX_CSR_BYTES:
                raise forms.ValidationError("A CSR is a few kilobytes; this file is too large.")
            data["csr"] = upload.read(MAX_CSR_BYTES + 1)
        else:
            data["csr"] = text.encode()
        return data


class AuditFilterForm(forms.Form):
    """The audit browser's filters (GET); every field optional. ``firm`` is an LEI or a firm's
    id (the firm page links with its id); dates are UTC days, both ends included."""

    firm = forms.CharField(required=False, max_length=20, label="Firm (LEI)")
    actor = forms.CharField(required=False, max_length=200, label="Actor contains")
    event = forms.CharField(required=False, max_length=64, label="Action")
    since = forms.DateField(
        required=False, label="From (UTC)", widget=forms.DateInput({"type": "date"})
    )
    until = forms.DateField(
        required=False, label="To (UTC)", widget=forms.DateInput({"type": "date"})
    )
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise forms.ValidationError("The first day is after the last.")
        return data


class EstPolicyForm(forms.Form):
    """A firm's EST policy (pki.models.EstPolicy), set by an officer."""

    auto_sign_enrollment = forms.BooleanField(
        required=False, label="Sign a first certificate enrolled with a token at once"
    )
    auto_sign_renewal = forms.BooleanField(
        required=False, label="Sign a renewal inside the window at once"
    )
    renewal_window_percent = forms.IntegerField(
        min_value=1,
        max_value=100,
        label="Renewal opens when this share of the lifetime remains (%)",
    )
    renewal_blocked = forms.BooleanField(required=False, label="Block renewal by EST")
