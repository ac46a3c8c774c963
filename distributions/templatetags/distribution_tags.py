from django import template

from distributions.models import Message

register = template.Library()

PERSON_MESSAGES_SHOWN = 50


@register.inclusion_tag("distributions/_person_messages.html", takes_context=True)
def person_messages(context, person):
    """The latest messages sent to a person, across the brand's distributions (one query)."""
    messages = (
        Message.objects.filter(person=person)
        .select_related("distribution__project")
        .order_by("-status_changed_at", "-pk")[:PERSON_MESSAGES_SHOWN]
    )
    return {"person": person, "person_message_rows": messages, "request": context.get("request")}
