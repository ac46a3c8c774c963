from decimal import Decimal

import factory

from credits.models import CountryRate, RateCard


class CountryRateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CountryRate
        django_get_or_create = ("country",)

    country = "US"
    rate = Decimal("1")
    enabled = True


def set_default_rate(rate) -> RateCard:
    card = RateCard.current()
    card.default_rate = Decimal(str(rate))
    card.save()
    return card


def grant(brand, amount, **kwargs):
    from credits.services import credits_grant

    return credits_grant(brand=brand, amount=Decimal(str(amount)), **kwargs)
