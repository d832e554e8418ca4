from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from accounts.roles import ROLE_CHOICES

NEW_PASSWORD_HELP = "At least 10 characters; not a common or all-digit password."


class SignupForm(forms.Form):
    full_name = forms.CharField(
        max_length=150, required=False, label="Your name", widget=forms.TextInput(attrs={"autocomplete": "name"})
    )
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}), min_length=1, max_length=256,
        help_text=NEW_PASSWORD_HELP,
    )
    workspace_name = forms.CharField(
        max_length=120, label="Workspace name", widget=forms.TextInput(attrs={"autocomplete": "organization"})
    )
    slug = forms.CharField(
        max_length=40, required=False, label="Workspace address",
        help_text="Lowercase letters, digits and dashes. Leave empty to derive it from the name.",
    )


class LoginForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}), max_length=256)


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial="agent")


class AcceptInvitationForm(forms.Form):
    full_name = forms.CharField(
        max_length=150, required=False, label="Your name", widget=forms.TextInput(attrs={"autocomplete": "name"})
    )
    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}), max_length=256, help_text=NEW_PASSWORD_HELP
    )


class RoleChangeForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=[("read", "read"), ("write", "write"), ("chat", "chat")],
        widget=forms.CheckboxSelectMultiple, initial=["read", "write", "chat"],
    )


class ThrottledAdminLoginForm(AdminAuthenticationForm):
    """The Django admin's login form under the product login's throttle (accounts.throttles): refused while the
    e-mail or the client address is over budget, every failure counted. The wait is left on the request for the
    view (accounts.views.admin_login) to answer 429."""

    def clean(self):
        from accounts import throttles
        from config.client_ip import client_ip

        email = (self.cleaned_data.get("username") or "").lower()
        ip = client_ip(self.request)
        wait = throttles.login_throttle_wait(email=email, ip=ip)
        if wait:
            self.request.login_retry_after = wait
            raise ValidationError(f"Too many failed attempts. Try again in {max(wait // 60, 1)} minute(s).",
                                  code="throttled")
        try:
            cleaned = super().clean()
        except ValidationError:
            throttles.login_failure_record(email=email, ip=ip)
            raise
        throttles.login_success_record(email=email)
        return cleaned
