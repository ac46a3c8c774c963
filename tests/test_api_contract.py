"""The schema is the API: schemathesis drives every operation of ``/api/v1/schema/`` in-process
(WSGI, no network) with a real API key of a brand that has data, and every check must pass:
no 5xx, every status and body documented, schema-breaking input refused, valid input taken.

Each operation runs schemathesis' examples, coverage and fuzzing phases, the fuzzing bounded to
``FUZZ_EXAMPLES`` cases, so that the whole test takes a couple of minutes (104 s alone on this
2-core machine while it was busy). Everything it writes
is in the test's database transaction, rolled back at the end; uploads go to a temporary
MEDIA_ROOT. It runs once per ``make test`` pass (SQLite, then PostgreSQL).
"""

from __future__ import annotations

import os
import socket
from decimal import Decimal

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from brands.models import ApiKey
from brands.roles import Role
from config.wsgi import application
from tests.factories.brands import ApiKeyFactory

FUZZ_EXAMPLES = 12

# Operations whose input has rules no JSON schema can state (a phone number that parses in
# the project's country, a verified From domain, a period of at most a year, a URL whose host
# resolves to a public address...): a schema-valid body may still be refused with 400 and the
# rule's message. Every other answer of theirs is checked as usual.
SEMANTIC_RULES = {
    "GET /api/v1/credits/entries/": "the period: end on or after start, at most 366 days",
    "GET /api/v1/credits/usage/": "the period: end on or after start, at most 366 days",
    "POST /api/v1/credits/grants/": "a number of credits other than zero",
    "POST /api/v1/distributions/": "message rules (${link}, ${opt_out_link}, sender, length)",
    "POST /api/v1/distributions/estimate/": "conditions and the parent must fit the project",
    "POST /api/v1/distributions/preview/": "conditions must fit the project",
    "POST /api/v1/distributions/bulk-edit/": "message rules, ids of scheduled distributions",
    "PATCH /api/v1/distributions/{id}/": "message rules; only scheduled ones change",
    "POST /api/v1/distributions/{id}/copy/": "a send time ahead; message rules in the project",
    "POST /api/v1/distributions/{id}/retry/": "message rules; the project must be active",
    "POST /api/v1/distributions/{id}/resend/": "message rules; the project must be active",
    "POST /api/v1/distributions/{id}/test/": "a phone number that parses; message rules",
    "POST /api/v1/library-messages/": "an SMS of at most 1,600 characters, no subject",
    "PATCH /api/v1/library-messages/{id}/": "an SMS of at most 1,600 characters, no subject",
    "PUT /api/v1/email-settings/": "a verified From domain; an SMTP host with transport smtp",
    "POST /api/v1/email-domains/": "a domain name; a PEM DKIM key with its selector",
    "PATCH /api/v1/email-domains/{id}/": "a PEM DKIM key with its selector",
    "POST /api/v1/imports/": "the file must be a CSV with a header this import reads",
    "POST /api/v1/optouts/": "the address must be a phone number or an email for the channel",
    "POST /api/v1/people/": "a phone number that parses; a PersonID of nobody else",
    "PUT /api/v1/people/{id}/": "a phone number that parses; a PersonID of nobody else",
    "PATCH /api/v1/people/{id}/": "a phone number that parses; a PersonID of nobody else",
    "POST /api/v1/people/bulk/": "each record is checked as an import row",
    "POST /api/v1/projects/{project_pk}/participants/": "a phone number that parses",
    "PUT /api/v1/projects/{project_pk}/participants/{id}/": "a phone number that parses",
    "PATCH /api/v1/projects/{project_pk}/participants/{id}/": "a phone number that parses",
    "POST /api/v1/projects/{project_pk}/participants/bulk/": "each record as an import row",
    "POST /api/v1/projects/": "available_until after available_from; a country; a time zone",
    "PUT /api/v1/projects/{id}/": "available_until after available_from; a country; a time zone",
    "PATCH /api/v1/projects/{id}/": "available_until after available_from; an IANA time zone",
    "POST /api/v1/projects/{id}/stage/": "the stage change must be allowed from the current one",
    "POST /api/v1/projects/{project_pk}/links/": "a contact that can be found again",
    "POST /api/v1/projects/{project_pk}/reminders/": "message rules; the invite it follows",
    "POST /api/v1/projects/{project_pk}/recurrences/": "message and schedule rules",
    "POST /api/v1/projects/{project_pk}/responses/": "answers must fit the questions",
    "POST /api/v1/projects/{project_pk}/questions/": "choices fit the question's kind",
    "PUT /api/v1/projects/{project_pk}/questions/{id}/": "choices fit the question's kind",
    "PATCH /api/v1/projects/{project_pk}/questions/{id}/": "choices fit the question's kind",
    "POST /api/v1/projects/{project_pk}/questions/reorder/": "every question, once",
    "PUT /api/v1/sms-provider/": "credentials the provider accepts",
    "PUT /api/v1/brand/policies/": "an IANA time zone name; quiet hours that are not empty",
    "POST /api/v1/frequency-rules/": "a limit or a gap; conditions; brand rules: brand admins",
    "PUT /api/v1/frequency-rules/{id}/": "a limit or a gap; conditions; brand rules: admins",
    "PATCH /api/v1/frequency-rules/{id}/": "a limit or a gap; conditions; brand rules: admins",
    "DELETE /api/v1/frequency-rules/{id}/": "brand rules are deleted by brand admins only",
    "POST /api/v1/sms-keywords/": "a number; no STOP/HELP word; unique per number; texted survey",
    "POST /api/v1/webhooks/": "a URL whose host resolves to a public address",
    "PUT /api/v1/webhooks/{id}/": "a URL whose host resolves to a public address",
    "PATCH /api/v1/webhooks/{id}/": "a URL whose host resolves to a public address",
}

CONFIG = SchemathesisConfig.from_dict(
    {
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        # Text never holds NUL (docs/api.md, Limits): no database column can store it.
        "generation": {"max-examples": FUZZ_EXAMPLES, "database": "none", "allow-x00": False},
        "checks": {"enabled": True},
        "operations": [
            {
                "include-name": name,
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429"]
                    }
                },
            }
            for name in SEMANTIC_RULES
        ],
    }
)


@pytest.fixture
def brand_with_data(tenancy):
    """The tenancy's brand A with something of every kind the API lists."""
    from credits.services import credits_grant
    from distributions.models import Distribution, EmailDomain
    from optouts.models import Consent
    from tests.factories.distributions import DistributionFactory, MessageFactory, OptOutFactory
    from tests.factories.projects import QuestionFactory
    from webhooks.models import WebhookEndpoint

    brand = tenancy.brand_a
    credits_grant(brand=brand, amount=Decimal("100"))
    distribution = DistributionFactory(project=tenancy.project_a)
    MessageFactory(
        distribution=distribution,
        participant=tenancy.participant_a,
        person=tenancy.participant_a.person,
        status="sent",
    )
    DistributionFactory(
        project=tenancy.project_a, kind=Distribution.Kind.REMINDER, parent=distribution
    )
    question = QuestionFactory(project=tenancy.project_a)
    optout = OptOutFactory(brand=brand, address="+14155550199")
    consent = Consent.objects.create(brand=brand, project=tenancy.project_a, address="+14155550198")
    domain = EmailDomain.objects.create(brand=brand, domain="mail.alpha.example")
    endpoint = WebhookEndpoint.objects.create(
        brand=brand, url="https://hooks.alpha.example/relay", events=["participant.opted_out"]
    )
    # Ids of real objects, put in place of half the ids that schemathesis makes up (those
    # are almost never an object of the brand: every case would stop at 404).
    tenancy.ids = {
        "project_pk": tenancy.project_a.pk,
        "/projects/{id}": tenancy.project_a.pk,
        "/participants/{id}": tenancy.participant_a.pk,
        "/questions/{id}": question.pk,
        "/distributions/{id}": distribution.pk,
        "/people/{id}": tenancy.participant_a.person_id,
        "/optouts/{id}": optout.pk,
        "/sms-consents/{id}": consent.pk,
        "/email-domains/{id}": domain.pk,
        "/webhooks/{id}": endpoint.pk,
    }
    return tenancy


def _real_ids(case, ids: dict) -> None:
    """Even ids schemathesis made up become ids of the brand's objects, by path."""
    for name, value in list(case.path_parameters.items()):
        if not isinstance(value, int) or isinstance(value, bool) or value % 2:
            continue
        if name in ids:
            case.path_parameters[name] = ids[name]
            continue
        for fragment, real in ids.items():
            if fragment.startswith("/") and f"{fragment}/" in case.path:
                case.path_parameters[name] = real


# The app's own schema, served by the app (no database needed to serve it).
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application, config=CONFIG)


class _Keys:
    """A brand admin's key of the test's brand, made again when the run revoked it
    (DELETE /api-keys/{id}). ``current`` is the running test's."""

    current: _Keys | None = None

    def __init__(self, brand):
        self.brand = brand
        self.key = ApiKeyFactory(brand=brand, role=Role.BRAND_ADMIN)

    def secret(self) -> str:
        if not ApiKey.objects.filter(pk=self.key.pk, revoked_at__isnull=True).exists():
            self.key = ApiKeyFactory(brand=self.brand, role=Role.BRAND_ADMIN)
        return self.key.plain_key


PLACEHOLDER = "Bearer rly_test_placeholder"


@schema.auth()
class ApiKeyAuth:
    """The API's security scheme, given to schemathesis, which sends it with each case (and
    leaves it out, or spoils it, where a case is about authentication). Cases are partly
    generated while tests are collected, before any test has a database and a key: they carry
    a placeholder, which the test swaps for its key."""

    def get(self, case, context):
        return PLACEHOLDER

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": data}


@pytest.fixture
def no_dns(monkeypatch):
    """Host names do not resolve (as on a machine without a network): a webhook URL or an
    SMTP host is refused for it, and no query ever leaves the machine."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host in ("localhost", "127.0.0.1", "::1"):
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def keys(brand_with_data, wsgi_in_test_transaction, no_dns, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"  # uploads of the run, removed with tmp_path
    _Keys.current = _Keys(brand_with_data.brand_a)
    yield _Keys.current
    _Keys.current = None


@schema.parametrize()
@settings(
    # The same cases on every run, so that CI fails only on a change of behaviour;
    # RELAY_CONTRACT_EXPLORE=1 draws new ones (run it now and then, and fix what it finds).
    derandomize=not os.environ.get("RELAY_CONTRACT_EXPLORE"),
    # About 2,000 requests over the API's operations on every run (each database); explore
    # with more: RELAY_CONTRACT_EXAMPLES=100.
    max_examples=int(os.environ.get("RELAY_CONTRACT_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
@pytest.mark.django_db
def test_the_api_keeps_its_schema(case, keys, brand_with_data):
    _real_ids(case, brand_with_data.ids)
    if (case.headers or {}).get("Authorization") == PLACEHOLDER:
        case.headers["Authorization"] = f"Bearer {keys.secret()}"
    case.call_and_validate()


def test_the_schema_states_what_the_api_does(client):
    """What schemathesis first found, said plainly (issue 18)."""
    document = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"ApiKey": schemes["ApiKey"]} and schemes["ApiKey"]["scheme"] == "bearer"
    components = document["components"]["schemas"]
    for component, field in [
        ("Distribution", "started_at"),
        ("Distribution", "finished_at"),
        ("EmailDomain", "verified_at"),
        ("OptOutEvent", "actor"),
    ]:
        assert components[component]["properties"][field].get("nullable") is True, field
    bulk = document["paths"]["/api/v1/people/bulk/"]["post"]["responses"]
    assert "dry_run" in components["BulkUpsertReport"]["required"]
    assert bulk["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "BulkUpsertRefusal"
    )
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation.get("security") == [{"ApiKey": []}], (method, path)
            assert {"400", "401", "403", "404", "429"} <= set(operation["responses"]), path
            body = operation.get("requestBody", {}).get("content", {})
            assert set(body) <= {"application/json", "multipart/form-data"}, path
