"""Who a reminder targets (docs/survey.md, "Reminders"): the recipients of its invite who have not
responded, or, without an invite, every participant of the project who has not responded; with
the audience "started" (``Distribution.AUDIENCE_STARTED``), only those of them who started the
survey (saved or partial answers) and did not finish.

A *respondent* is defined once, in ``surveys.respondents``; the history CSV's Respondent column
(``selectors.history_queryset``) uses the same definition.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef

from distributions.conditions import conditions_q
from distributions.models import Distribution, Message
from optouts.models import Consent, ConsentPolicy
from participants.models import Participant
from participants.selectors import metadata_spellings
from surveys.respondents import respondent_participant_ids, started_participant_ids


def reminder_audience(distribution: Distribution, queryset):
    if distribution.parent_id:
        reached = Message.objects.filter(
            distribution_id=distribution.parent_id,
            participant_id=OuterRef("pk"),
            status__in=Message.HANDED_OVER,
        )
        queryset = queryset.filter(Exists(reached))
    if distribution.audience == Distribution.AUDIENCE_STARTED:
        queryset = queryset.filter(pk__in=started_participant_ids(distribution.project_id))
    return queryset.exclude(pk__in=respondent_participant_ids(distribution.project_id))


# The recipients a resend goes to: those the original did not reach for good.
RESEND_STATUSES = (Message.Status.FAILED, Message.Status.BOUNCED, Message.Status.BLOCKED)


def origin_audience(distribution: Distribution, queryset):
    """A resend: only the original's Failed, Bounced or Blocked recipients. A try-again:
    everyone the original selects except whom it already reached (no duplicate sends)."""
    kind = distribution.origin_kind
    if kind == Distribution.Origin.RESEND:
        statuses = RESEND_STATUSES
    elif kind == Distribution.Origin.RETRY:
        statuses = Message.HANDED_OVER
    else:
        return queryset
    rows = Message.objects.filter(
        distribution_id=distribution.origin_id, participant_id=OuterRef("pk"), status__in=statuses
    )
    if kind == Distribution.Origin.RESEND:
        return queryset.filter(Exists(rows))
    return queryset.exclude(Exists(rows))


def recipients_queryset(distribution: Distribution, participant_ids: list[int] | None = None):
    """The participants a distribution selects: its conditions, and for reminders its audience."""
    queryset = Participant.objects.filter(project_id=distribution.project_id).filter(
        conditions_q(
            distribution.conditions,
            spellings=metadata_spellings(project_id=distribution.project_id),
        )
    )
    if participant_ids is not None:
        queryset = queryset.filter(pk__in=participant_ids)
    if distribution.kind == Distribution.Kind.REMINDER:
        queryset = reminder_audience(distribution, queryset)
    if distribution.origin_id:
        queryset = origin_audience(distribution, queryset)
    return consent_audience(distribution, queryset)


def consent_audience(distribution: Distribution, queryset):
    """A project that requires consent (docs/two-way.md): its SMS go only to numbers that
    consented, and its consent request only to those that have not. One SQL condition, no
    query of its own (materialisation's statements stay what they were)."""
    if distribution.channel != Distribution.Channel.SMS:
        return queryset
    consented = Exists(
        Consent.objects.filter(
            project_id=distribution.project_id, address=OuterRef("person__phone"), active=True
        )
    )
    if distribution.mode == Distribution.Mode.CONSENT:
        return queryset.exclude(consented)
    required = Exists(
        ConsentPolicy.objects.filter(project_id=distribution.project_id, required=True)
    )
    return queryset.filter(~required | consented)
