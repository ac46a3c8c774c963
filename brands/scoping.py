"""The one place that scopes data to a brand.

Every model a user or an API key can reach declares ``brand_path``, the lookup from it to its
Brand, and uses ``BrandScopedQuerySet``. Pages (``BrandScopedPageMixin``) and the API
(``BrandScopedAPIMixin``) build every queryset through ``for_brand``; ``get_for_brand`` answers
the same 404 for an object that does not exist and one that belongs to another brand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models
from django.http import Http404

if TYPE_CHECKING:
    from brands.models import Brand


class BrandScopedQuerySet(models.QuerySet):
    def for_brand(self, brand: Brand | None) -> models.QuerySet:
        if brand is None:
            return self.none()
        path = getattr(self.model, "brand_path", None)
        if not path:
            raise TypeError(f"{self.model.__name__} declares no brand_path")
        return self.filter(**{path: brand})


class BrandScopedManager(models.Manager.from_queryset(BrandScopedQuerySet)):
    pass


def get_for_brand(
    source: type[models.Model] | models.QuerySet, *, brand: Brand | None, **lookup: Any
):
    """Return the one object matching ``lookup`` inside ``brand``, or raise Http404.

    Missing and "another brand's" are indistinguishable on purpose.
    """
    queryset = source if isinstance(source, models.QuerySet) else source._default_manager.all()
    try:
        return queryset.for_brand(brand).get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404(f"No {queryset.model._meta.verbose_name} matches the given query.") from exc
