from django.contrib.auth import get_user_model

import factory

from brands.models import ApiKey, Brand, Membership
from brands.roles import Role


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    # Tests log in with force_login; hashing a real password (1M PBKDF2 rounds) per user would
    # dominate the suite. Browser tests that type a password pass ``password=...``.
    password = "!unusable"

    @classmethod
    def _create(cls, model_class, *args, password="!unusable", **kwargs):  # noqa: S107
        user = model_class(*args, **kwargs)
        if password == "!unusable":
            user.set_unusable_password()
        else:
            user.set_password(password)
        user.save()
        return user


class BrandFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Brand

    name = factory.Sequence(lambda n: f"Brand {n}")
    slug = factory.Sequence(lambda n: f"brand-{n}")
    default_country = "US"
    time_zone = "UTC"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    brand = factory.SubFactory(BrandFactory)
    role = Role.BRAND_ADMIN


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """Builds a key and keeps its plain secret on ``.plain_key`` (like the create answer)."""

    class Meta:
        model = ApiKey

    brand = factory.SubFactory(BrandFactory)
    name = factory.Sequence(lambda n: f"key {n}")
    role = Role.PROJECT_ADMIN

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        prefix, secret, full = model_class.new_credentials()
        obj = model_class.objects.create(
            *args, prefix=prefix, secret_hash=model_class.hash_secret(secret), **kwargs
        )
        obj.plain_key = full
        return obj
