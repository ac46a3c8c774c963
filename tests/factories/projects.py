from django.utils import timezone

import factory

from core.tokens import new_token
from projects.models import Project, Question, Response, SurveyLink
from tests.factories.brands import BrandFactory


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    brand = factory.SubFactory(BrandFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    kind = Project.Kind.ENGAGEMENT
    stage = Project.Stage.ACTIVE


class QuestionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Question

    project = factory.SubFactory(ProjectFactory)
    position = factory.Sequence(lambda n: n + 1)
    kind = Question.Kind.RATING
    text = factory.Sequence(lambda n: f"Question {n}?")


class SurveyLinkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SurveyLink

    project = factory.SubFactory(ProjectFactory)
    token = factory.LazyFunction(new_token)


class ResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Response

    project = factory.SubFactory(ProjectFactory)
    channel = Response.Channel.SMS
    status = Response.Status.COMPLETE
    completed_at = factory.LazyFunction(timezone.now)
