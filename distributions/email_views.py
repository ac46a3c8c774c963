"""The brand's email settings page (brand admins): the platform mailer or the brand's own SMTP
relay (the password write-only, shown masked), default From and Reply-To, its From domains with
their DKIM selector and key (the key write-only), and the operator's weekly limit, read-only.

Writes go through ``email_services``; the domains are fetched through ``get_scoped`` (another
brand's answers 404).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views import View

from brands.fields import redact
from brands.roles import Role
from brands.views import BrandPageMixin
from distributions import page_selectors
from distributions.email_services import (
    email_account_for,
    email_account_update,
    email_domain_create,
    email_domain_update,
    platform_domains,
    platform_from_address,
)
from distributions.models import EmailAccount, EmailDomain
from distributions.providers.base import ProviderError
from distributions.providers.registry import channel_provider_for

WRITE_ONLY = {"autocomplete": "new-password"}


class EmailAccountForm(forms.Form):
    transport = forms.ChoiceField(
        choices=EmailAccount.Transport.choices, widget=forms.RadioSelect, label="Send through"
    )
    smtp_host = forms.CharField(label="SMTP host", max_length=255, required=False)
    smtp_port = forms.IntegerField(label="Port", min_value=1, max_value=65535, initial=587)
    smtp_security = forms.ChoiceField(choices=EmailAccount.Security.choices, label="Security")
    smtp_username = forms.CharField(label="User name", max_length=255, required=False)
    smtp_password = forms.CharField(
        label="Password",
        max_length=255,
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs=WRITE_ONLY),
        help_text="Leave empty to keep the stored password. It is encrypted and never shown again.",
    )
    default_from_name = forms.CharField(label="Default From name", max_length=100, required=False)
    default_from_address = forms.EmailField(label="Default From address", required=False)
    default_reply_to = forms.EmailField(label="Default Reply-To", required=False)


class EmailDomainForm(forms.Form):
    domain = forms.CharField(max_length=253)
    dkim_selector = forms.CharField(label="DKIM selector", max_length=63, required=False)
    dkim_private_key = forms.CharField(
        label="DKIM private key (PEM)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, **WRITE_ONLY}),
        help_text="Unencrypted PEM. Stored encrypted, never shown again.",
    )


class EmailDomainKeyForm(forms.Form):
    dkim_selector = forms.CharField(label="DKIM selector", max_length=63, required=False)
    dkim_private_key = forms.CharField(
        label="New DKIM private key (PEM)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, **WRITE_ONLY}),
        help_text="Leave empty to keep the stored key.",
    )


def _apply(form, exc: ValidationError) -> None:
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


class EmailSettingsView(BrandPageMixin, View):
    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN

    def get(self, request, *, account_form=None, domain_form=None, key_forms=None, status=200):
        account = email_account_for(self.brand)
        account_form = account_form or EmailAccountForm(
            initial={
                "transport": account.transport,
                "smtp_host": account.smtp_host,
                "smtp_port": account.smtp_port,
                "smtp_security": account.smtp_security,
                "smtp_username": account.smtp_username,
                "default_from_name": account.default_from_name,
                "default_from_address": account.default_from_address,
                "default_reply_to": account.default_reply_to,
            }
        )
        domains = list(self.scoped(EmailDomain.objects.all()).order_by("domain"))
        key_forms = key_forms or {}
        return render(
            request,
            "distributions/email_settings.html",
            {
                "brand": self.brand,
                "account": account,
                "account_form": account_form,
                "domain_form": domain_form or EmailDomainForm(),
                "domains": [
                    (
                        domain,
                        key_forms.get(domain.pk)
                        or EmailDomainKeyForm(
                            initial={"dkim_selector": domain.dkim_selector},
                            prefix=f"d{domain.pk}",
                        ),
                        redact(domain.dkim_private_key) if domain.dkim_private_key else "",
                    )
                    for domain in domains
                ],
                "allowance": page_selectors.email_allowance(brand=self.brand),
                "platform_domains": platform_domains(),
                "platform_from_address": platform_from_address(),
            },
            status=status,
        )

    def post(self, request):
        action = request.POST.get("action")
        if action == "check":
            # The same check as POST /api/v1/email-settings/check/: connect and log in now.
            provider = channel_provider_for(email_account_for(self.brand), "email")
            try:
                provider.check_credentials()
            except ProviderError as exc:
                messages.error(request, f"The mail server did not accept the connection: {exc}")
            else:
                messages.success(request, "Connected to the mail server and logged in.")
            return redirect("distributions:email_settings")
        if action == "add_domain":
            form = EmailDomainForm(request.POST)
            if form.is_valid():
                try:
                    domain = email_domain_create(
                        brand=self.brand, actor=request.user, **form.cleaned_data
                    )
                except ValidationError as exc:
                    _apply(form, exc)
                else:
                    messages.success(
                        request,
                        f"{domain.domain} added. It can be used in From addresses once the "
                        "platform operator has verified its DNS records (SPF, DKIM, MX).",
                    )
                    return redirect("distributions:email_settings")
            return self.get(request, domain_form=form, status=400)
        if action == "domain_key":
            domain = self.get_scoped(EmailDomain, pk=request.POST.get("domain_id"))
            form = EmailDomainKeyForm(request.POST, prefix=f"d{domain.pk}")
            if form.is_valid():
                try:
                    email_domain_update(domain=domain, actor=request.user, **form.cleaned_data)
                except ValidationError as exc:
                    _apply(form, exc)
                else:
                    messages.success(request, f"DKIM settings of {domain.domain} saved.")
                    return redirect("distributions:email_settings")
            return self.get(request, key_forms={domain.pk: form}, status=400)
        form = EmailAccountForm(request.POST)
        if form.is_valid():
            try:
                email_account_update(brand=self.brand, actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                _apply(form, exc)
            else:
                messages.success(request, "Email settings saved.")
                return redirect("distributions:email_settings")
        return self.get(request, account_form=form, status=400)
