from django import template

from optouts.selectors import person_optout_state

register = template.Library()


@register.simple_tag
def person_optouts(person) -> dict:
    """The person's current opt-outs and audit trail (``{% person_optouts person as state %}``);
    the page that calls it has already scoped ``person`` to the current brand."""
    return person_optout_state(person=person)
