import factory

from projects.models import Project
from tests.factories.brands import BrandFactory


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    brand = factory.SubFactory(BrandFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    kind = Project.Kind.ENGAGEMENT
    stage = Project.Stage.ACTIVE
