from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def credits(value) -> str:
    """1234.5000 -> "1,234.5"; None -> "—"."""
    if value is None or value == "":
        return "—"
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    text = f"{amount.normalize():,f}"
    return "0" if text in ("-0", "0") else text
