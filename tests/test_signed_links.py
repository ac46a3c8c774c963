"""Signed anonymous links: a caller builds the URL offline with the project's secret; Relay
accepts it only when the signature matches and it has not expired, moves its parameters into
the session, strips them from the address bar, stores them as trusted embedded data, and lets
the URL answer once."""

from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime

import pytest

from brands.fields import decrypt_text
from projects.models import Response, SignedLinkUse, SigningSecret
from surveys.services import question_create
from surveys.signed_links import (
    session_key,
    sign,
    signed_url,
    signing_secret_issue,
    signing_secret_revoke,
)

pytestmark = pytest.mark.django_db
PARAMS = {"venue": "Arena Nord", "gate": "4", "customer": "C-1042", "note": "a&b=c/é"}


@pytest.fixture
def survey(tenancy):
    question_create(project=tenancy.project_a, kind="rating", text="Score?", required=True)
    return tenancy.project_a


def make_url(project, secret, *, params=None, expires_in=timedelta(hours=1)) -> str:
    return signed_url(
        project=project,
        secret=secret,
        params=PARAMS if params is None else params,
        expires_at=timezone.now() + expires_in,
    )


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def with_query(url: str, pairs) -> str:
    return f"{urlsplit(url).path}?{urlencode(pairs)}"


def answer(client, project) -> int:
    """Open the clean URL, post the form it shows; answer the POST's status."""
    page = client.get(f"/a/{project.public_token}")
    assert page.status_code == 200
    rating = project.questions.get()
    return client.post(
        f"/a/{project.public_token}", {rating.field_name: "8", "stamp": page.context["stamp"]}
    ).status_code


def test_a_signed_url_moves_its_parameters_to_the_session_and_answers_trusted(survey):
    _, secret = signing_secret_issue(project=survey)
    client = Client()

    opened = client.get(path_of(make_url(survey, secret)))

    assert opened.status_code == 302
    assert opened["Location"] == f"/a/{survey.public_token}"  # no parameter left in the URL
    assert client.session[session_key(survey)]["params"] == PARAMS
    assert answer(client, survey) == 200
    response = Response.objects.get()
    assert response.embedded_data == PARAMS
    assert response.untrusted_keys == []  # signed: trusted
    assert response.signed_use.digest


def test_unsigned_parameters_stay_untrusted_beside_signed_ones(survey):
    _, secret = signing_secret_issue(project=survey)
    client = Client()
    client.get(path_of(make_url(survey, secret, params={"venue": "Arena"})))
    page = client.get(f"/a/{survey.public_token}?venue=Fake&utm=push")
    rating = survey.questions.get()

    client.post(
        f"/a/{survey.public_token}?venue=Fake&utm=push",
        {rating.field_name: "8", "stamp": page.context["stamp"]},
    )

    response = Response.objects.get()
    assert response.embedded_data == {"venue": "Arena", "utm": "push"}
    assert response.untrusted_keys == ["utm"]


def test_a_signed_url_answers_once(survey):
    _, secret = signing_secret_issue(project=survey)
    url = path_of(make_url(survey, secret))
    first = Client()
    first.get(url)
    assert answer(first, survey) == 200

    again = first.get(f"/a/{survey.public_token}")  # the same browser
    assert again.status_code == 200 and b"already" in again.content.lower()
    other = Client()  # the same URL in another browser
    assert other.get(url).status_code == 302
    page = other.get(f"/a/{survey.public_token}")
    assert b"already" in page.content.lower()
    assert Response.objects.count() == 1 and SignedLinkUse.objects.count() == 1


def test_a_second_browser_that_had_the_form_open_is_refused(survey):
    _, secret = signing_secret_issue(project=survey)
    url = path_of(make_url(survey, secret))
    first, second = Client(), Client()
    first.get(url)
    second.get(url)
    rating = survey.questions.get()
    forms = [c.get(f"/a/{survey.public_token}").context["stamp"] for c in (first, second)]

    statuses = [
        c.post(f"/a/{survey.public_token}", {rating.field_name: "5", "stamp": stamp}).status_code
        for c, stamp in zip((first, second), forms, strict=True)
    ]

    assert statuses == [200, 409]
    assert Response.objects.count() == 1


@pytest.mark.parametrize("name", ["venue", "gate", "customer", "note", "exp"])
def test_each_parameter_changed_answers_403(survey, name):
    _, secret = signing_secret_issue(project=survey)
    url = make_url(survey, secret)
    pairs = [(k, v + "1" if k == name else v) for k, v in query_of(url)]

    page = Client().get(with_query(url, pairs))

    assert page.status_code == 403
    assert b"This link is not valid" in page.content
    assert b"Arena" not in page.content  # nothing of the survey or the parameters


@pytest.mark.parametrize(
    ("change", "status"),
    [
        (lambda pairs: [p for p in pairs if p[0] != "sig"] + [("sig", "")], 403),
        (lambda pairs: [*pairs, ("extra", "1")], 403),
        (lambda pairs: [p for p in pairs if p[0] != "venue"], 403),
        (lambda pairs: [p for p in pairs if p[0] != "exp"], 400),
        (lambda pairs: [*pairs, ("venue", "again")], 400),
    ],
    ids=["signature-emptied", "parameter-added", "parameter-removed", "no-exp", "repeated"],
)
def test_other_tampering_is_refused(survey, change, status):
    _, secret = signing_secret_issue(project=survey)
    url = make_url(survey, secret)

    page = Client().get(with_query(url, change(query_of(url))))

    assert page.status_code == status
    assert not Response.objects.exists()


def test_without_a_signature_the_link_is_a_plain_anonymous_link(survey):
    _, secret = signing_secret_issue(project=survey)
    url = make_url(survey, secret)
    client = Client()
    pairs = [p for p in query_of(url) if p[0] != "sig"]

    page = client.get(with_query(url, pairs))  # the unsigned anonymous link, as before

    assert page.status_code == 200
    assert session_key(survey) not in client.session


def test_an_expired_url_answers_410(survey):
    _, secret = signing_secret_issue(project=survey)

    page = Client().get(path_of(make_url(survey, secret, expires_in=timedelta(seconds=-1))))

    assert page.status_code == 410 and b"This link has expired" in page.content


def test_another_projects_secret_or_url_is_refused(tenancy, survey):
    from tests.factories.projects import ProjectFactory

    other = ProjectFactory(brand=tenancy.brand_a)
    _, secret = signing_secret_issue(project=survey)
    _, other_secret = signing_secret_issue(project=other)
    signed_for_other = make_url(other, other_secret)
    moved = f"/a/{survey.public_token}?{urlsplit(signed_for_other).query}"

    assert Client().get(moved).status_code == 403
    assert Client().get(path_of(make_url(survey, other_secret))).status_code == 403
    assert Client().get(path_of(make_url(survey, secret))).status_code == 302


def test_a_rotated_or_revoked_secret_stops_its_urls(survey):
    _, old = signing_secret_issue(project=survey)
    old_url = path_of(make_url(survey, old))
    _, new = signing_secret_issue(project=survey)

    assert Client().get(old_url).status_code == 403
    assert Client().get(path_of(make_url(survey, new))).status_code == 302
    signing_secret_revoke(project=survey)
    assert Client().get(path_of(make_url(survey, new))).status_code == 403
    assert SigningSecret.objects.filter(project=survey, revoked_at__isnull=True).count() == 0


def test_a_secret_rotated_with_a_grace_period_keeps_its_urls_until_it_ends(survey):
    _, old = signing_secret_issue(project=survey)
    _, new = signing_secret_issue(project=survey, grace=timedelta(hours=24))

    assert Client().get(path_of(make_url(survey, old))).status_code == 302
    assert Client().get(path_of(make_url(survey, new))).status_code == 302
    # When the period has passed (moved back here rather than waiting a day), it stops.
    SigningSecret.objects.filter(project=survey, accepted_until__isnull=False).update(
        accepted_until=timezone.now() - timedelta(seconds=1)
    )
    assert Client().get(path_of(make_url(survey, old))).status_code == 403
    assert Client().get(path_of(make_url(survey, new))).status_code == 302


def test_revoking_also_ends_a_rotated_secrets_grace(survey):
    _, old = signing_secret_issue(project=survey)
    signing_secret_issue(project=survey, grace=timedelta(days=7))

    assert signing_secret_revoke(project=survey)
    assert Client().get(path_of(make_url(survey, old))).status_code == 403


def test_a_grace_period_longer_than_a_week_is_refused(survey):
    signing_secret_issue(project=survey)
    with pytest.raises(ValidationError) as refused:
        signing_secret_issue(project=survey, grace=timedelta(days=8))
    assert "grace_hours" in refused.value.message_dict
    assert SigningSecret.objects.filter(project=survey).count() == 1


def test_the_canonical_form_is_the_documented_one(survey):
    """Built by hand, as docs/links.md says, with the standard library only."""
    import base64
    import hashlib
    import hmac
    from urllib.parse import quote

    _, secret = signing_secret_issue(project=survey)
    # "é" sorts after "z" unescaped, before it escaped (%C3%A9); "a-b" before "a" as text
    # joined with "=", after it as a pair.
    params = {
        "z": "x y",
        "é": "é/&",
        "a-b": "1",
        "a": "2",
        "exp": str(int(timezone.now().timestamp()) + 600),
    }
    pairs = sorted((quote(k, safe="-._~"), quote(v, safe="-._~")) for k, v in params.items())
    canonical = "&".join(f"{k}={v}" for k, v in pairs)
    assert canonical.startswith("%C3%A9=") and canonical.index("a=2") < canonical.index("a-b=")
    message = f"{survey.public_token}\n{canonical}".encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    assert signature == sign(secret, survey.public_token, list(params.items()))
    query = urlencode({**params, "sig": signature})
    assert Client().get(f"/a/{survey.public_token}?{query}").status_code == 302


def test_the_secret_is_encrypted_at_rest(survey):
    record, secret = signing_secret_issue(project=survey)
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM projects_signingsecret WHERE id = %s", [record.pk])
        stored = cursor.fetchone()[0]
    assert secret not in stored and decrypt_text(stored) == secret
    assert record.hint == secret[-4:]


# --- the API and the page ----------------------------------------------------------------
def api_url(project) -> str:
    return f"/api/v1/projects/{project.pk}/signing-secret/"


def test_the_api_issues_shows_once_rotates_and_revokes(api_a, tenancy):
    project = tenancy.project_a
    assert api_a.get(api_url(project)).json()["active"] is False

    issued = api_a.post(api_url(project))

    assert issued.status_code == 201
    secret = issued.json()["secret"]
    state = api_a.get(api_url(project)).json()
    assert state["active"] and state["hint"] == secret[-4:] and "secret" not in state
    assert secret not in api_a.get(api_url(project)).content.decode()
    rotated = api_a.post(api_url(project)).json()["secret"]
    assert rotated != secret
    assert SigningSecret.objects.filter(project=project).count() == 2
    assert api_a.delete(api_url(project)).status_code == 204
    assert api_a.get(api_url(project)).json()["active"] is False


def test_the_api_rotates_with_a_grace_period_and_shows_the_previous_hint(api_a, tenancy):
    project = tenancy.project_a
    first = api_a.post(api_url(project)).json()["secret"]

    rotated = api_a.post(api_url(project), {"grace_hours": 24}, format="json")

    assert rotated.status_code == 201
    previous = api_a.get(api_url(project)).json()["previous"]
    assert previous["hint"] == first[-4:]
    accepted_until = previous["accepted_until"]
    assert (
        timedelta(hours=23) < parse_datetime(accepted_until) - timezone.now() <= timedelta(hours=24)
    )
    for body, field in (({"grace_hours": 200}, "grace_hours"), ({"color": 1}, "color")):
        refused = api_a.post(api_url(project), body, format="json")
        assert refused.status_code == 400
        assert set(refused.json()["error"]["fields"]) == {field}
    assert SigningSecret.objects.filter(project=project).count() == 2


def test_the_api_is_for_admins_of_the_brand_only(api_client_for, tenancy, api_a):
    viewer = api_client_for(user=tenancy.viewer_a)
    assert viewer.get(api_url(tenancy.project_a)).status_code == 403
    assert viewer.post(api_url(tenancy.project_a)).status_code == 403
    assert api_a.post(api_url(tenancy.project_b)).status_code == 404
    assert not SigningSecret.objects.exists()


def test_the_links_page_creates_shows_once_and_revokes(page_client_for, tenancy):
    project = tenancy.project_a
    client = page_client_for(tenancy.project_admin_a)
    page_url = f"/projects/{project.pk}/links/"
    assert b"No signing secret" in client.get(page_url).content

    made = client.post(f"/projects/{project.pk}/links/signing-secret/", {"action": "issue"})

    assert made.status_code == 200
    secret = made.context["new_secret"]
    assert secret.encode() in made.content
    shown = client.get(page_url).content
    assert secret.encode() not in shown and secret[-4:].encode() in shown
    client.post(f"/projects/{project.pk}/links/signing-secret/", {"action": "revoke"})
    assert b"No signing secret" in client.get(page_url).content


def test_the_links_page_rotates_with_a_grace_period(page_client_for, tenancy):
    project = tenancy.project_a
    client = page_client_for(tenancy.project_admin_a)
    action = f"/projects/{project.pk}/links/signing-secret/"
    first = client.post(action, {"action": "issue"}).context["new_secret"]

    client.post(action, {"action": "issue", "grace_hours": "168"})

    page = client.get(f"/projects/{project.pk}/links/").content.decode()
    assert "previous secret, ending in <code>" + first[-4:] in page
    refused = client.post(action, {"action": "issue", "grace_hours": "9999"}, follow=True)
    assert SigningSecret.objects.filter(project=project).count() == 2  # refused, nothing made
    assert "Grace period: between 0 and 168 hours." in refused.content.decode()


def test_the_page_refuses_viewers_and_other_brands(page_client_for, tenancy):
    viewer = page_client_for(tenancy.viewer_a)
    target = f"/projects/{tenancy.project_a.pk}/links/signing-secret/"
    assert viewer.post(target, {"action": "issue"}).status_code == 403
    admin = page_client_for(tenancy.admin_a)
    other = f"/projects/{tenancy.project_b.pk}/links/signing-secret/"
    assert admin.post(other, {"action": "issue"}).status_code == 404
    assert not SigningSecret.objects.exists()


def test_the_python_snippet_in_the_docs_builds_an_accepted_url(survey, settings):
    """The snippet of docs/links.md, run as it is printed."""
    from pathlib import Path

    text = (Path(settings.BASE_DIR) / "docs" / "links.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python")[1:]]
    snippet = next(b for b in blocks if "def signed_link(" in b)
    _, secret = signing_secret_issue(project=survey)
    namespace = {"SECRET": secret}
    exec(snippet.split("\nurl = ", 1)[0], namespace)  # noqa: S102 - our own documentation

    url = namespace["signed_link"](survey.anonymous_url, secret, {"venue": "Arena Nord", "é": "1"})

    client = Client()
    assert client.get(path_of(url)).status_code == 302
    assert client.session[session_key(survey)]["params"] == {"venue": "Arena Nord", "é": "1"}
