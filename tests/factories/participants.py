import factory

from participants.models import Participant, Person
from tests.factories.brands import BrandFactory
from tests.factories.projects import ProjectFactory


class PersonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Person

    brand = factory.SubFactory(BrandFactory)
    person_id = factory.Sequence(lambda n: f"P{n:06d}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda o: f"{o.person_id.lower()}@example.com")
    username = factory.LazyAttribute(lambda o: o.person_id.lower())
    phone = factory.Sequence(lambda n: f"+1415555{n % 10000:04d}")
    metadata = factory.LazyFunction(dict)


class ParticipantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Participant

    project = factory.SubFactory(ProjectFactory)
    person = factory.SubFactory(PersonFactory, brand=factory.SelfAttribute("..project.brand"))
    role = "Employee"
    metadata = factory.LazyFunction(dict)
