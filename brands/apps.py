from django.apps import AppConfig


class BrandsConfig(AppConfig):
    name = "brands"
    verbose_name = "Brands"

    def ready(self):
        # Registers the API key's OpenAPI security scheme with drf-spectacular.
        from brands.api import schema  # noqa: F401
