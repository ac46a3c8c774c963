from django.utils import timezone

import factory

from distributions.models import Distribution, Message, ProviderAccount
from optouts.models import OptOut
from tests.factories.brands import BrandFactory
from tests.factories.projects import ProjectFactory


class DistributionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Distribution

    project = factory.SubFactory(ProjectFactory)
    channel = Distribution.Channel.SMS
    kind = Distribution.Kind.INVITE
    message = "Hi ${first_name}, tell us how it went: ${link}"
    send_at = factory.LazyFunction(timezone.now)


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    distribution = factory.SubFactory(DistributionFactory)
    address = factory.Sequence(lambda n: f"+1415555{n % 10000:04d}")
    status = Message.Status.PENDING
    status_changed_at = factory.LazyFunction(timezone.now)


class ProviderAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderAccount

    brand = factory.SubFactory(BrandFactory)
    provider = "outbox"
    messages_per_second = 1000


class OptOutFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OptOut

    brand = factory.SubFactory(BrandFactory)
    channel = "sms"
    address = "+14155550100"
    source = "reply"
