"""Credits: the rate card, the append-only ledger and the bookkeeping of reservations.

The truth is ``CreditEntry``: rows are only ever added, never changed or deleted. Two figures
are derived from them (see ``credits.selectors``):

* the **balance** (what the brand owns) is the sum of ``amount``: grants and purchases add,
  debits subtract, operator adjustments do either;
* the **reserved** credits are the sum of ``held``: a reservation adds, a release and the
  reserved part of a debit subtract. **Available** = balance - reserved.

``CreditAccount`` is one row per brand that every ledger writer locks first
(``credits.lock_objects``); it also caches a prefix sum of the ledger (recomputable, see
``CreditAccount``). ``CreditReservation`` and ``CreditHold`` are the bookkeeping of one
distribution's reservation and of the credits set aside for each message being sent; they
never decide a balance on their own. ``docs/credits.md`` tells the whole design.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from brands.models import Brand, validate_region
from brands.scoping import BrandScopedManager

ZERO = Decimal("0")
# Credits are counted to 4 decimal places (a segment may cost 0.0075 credits).
AMOUNT_DIGITS = 14
AMOUNT_PLACES = 4
RATE_DIGITS = 10


class RateCard(models.Model):
    """The platform's default price: credits per segment for countries without their own rate.

    One row (pk 1), edited by the platform operator in the Django admin.
    """

    SINGLETON_PK = 1

    default_rate = models.DecimalField(
        "default credits per segment",
        max_digits=RATE_DIGITS,
        decimal_places=AMOUNT_PLACES,
        default=ZERO,
        validators=[MinValueValidator(ZERO)],
        help_text=(
            "Used for every country that has no rate of its own. 0 until the operator sets "
            "prices: a platform without a rate card does not charge for SMS."
        ),
    )
    default_inbound_rate = models.DecimalField(
        "default credits per inbound message",
        max_digits=RATE_DIGITS,
        decimal_places=AMOUNT_PLACES,
        default=ZERO,
        validators=[MinValueValidator(ZERO)],
        help_text="A reply in a two-way conversation, for countries without their own rate.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "rate card"
        verbose_name_plural = "rate card (default rate)"

    def __str__(self) -> str:
        return f"Default rate: {self.default_rate} credits per segment"

    def save(self, *args, **kwargs):
        self.pk = self.SINGLETON_PK
        super().save(*args, **kwargs)

    @classmethod
    def current(cls) -> RateCard:
        card, _ = cls.objects.get_or_create(pk=cls.SINGLETON_PK)
        return card


class CountryRate(models.Model):
    """Credits per SMS segment for recipients in one country (from their E.164 number).

    A disabled country is not sent to: its recipients are Skipped with a reason.
    """

    country = models.CharField(
        max_length=2, unique=True, validators=[validate_region], help_text="ISO 3166 alpha-2."
    )
    rate = models.DecimalField(
        "credits per segment",
        max_digits=RATE_DIGITS,
        decimal_places=AMOUNT_PLACES,
        validators=[MinValueValidator(ZERO)],
    )
    inbound_rate = models.DecimalField(
        "credits per inbound message",
        max_digits=RATE_DIGITS,
        decimal_places=AMOUNT_PLACES,
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO)],
        help_text="A reply from a number in this country (two-way SMS); empty: the default.",
    )
    enabled = models.BooleanField(
        default=True, help_text="Disabled: recipients in this country are skipped."
    )
    note = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["country"]
        constraints = [
            models.CheckConstraint(condition=Q(rate__gte=0), name="country_rate_not_negative")
        ]

    def __str__(self) -> str:
        state = "" if self.enabled else " (disabled)"
        return f"{self.country}: {self.rate}{state}"


class CreditAccount(models.Model):
    """One row per brand: the lock every ledger writer of the brand takes first.

    ``summed_*`` cache the sums of the brand's entries with ``id <= summed_upto_id``. Entries
    are append-only and a brand's entries are only written under this row's lock, so that
    prefix never changes: the cache is a shortcut, not a second truth, and
    ``credits.selectors.credits_verify`` recomputes it from the ledger alone.
    """

    brand_path = "brand"

    brand = models.OneToOneField(Brand, on_delete=models.CASCADE, related_name="credit_account")
    summed_upto_id = models.BigIntegerField(default=0, editable=False)
    summed_amount = models.DecimalField(
        max_digits=AMOUNT_DIGITS + 4, decimal_places=AMOUNT_PLACES, default=ZERO, editable=False
    )
    summed_held = models.DecimalField(
        max_digits=AMOUNT_DIGITS + 4, decimal_places=AMOUNT_PLACES, default=ZERO, editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    def __str__(self) -> str:
        return f"Credit account of {self.brand}"


class CreditReservation(models.Model):
    """The reservation of one distribution: opened when it starts, closed once released.

    ``rates`` freezes the rate of every country the distribution sends to when it starts, so
    that its messages are debited at the price it was reserved at. The reservation outlives
    its distribution (``distribution`` is set null if the distribution is deleted) so that its
    held credits can still be released.
    """

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="credit_reservations")
    distribution = models.OneToOneField(
        "distributions.Distribution",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="credit_reservation",
    )
    project = models.ForeignKey(
        "projects.Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    self_service = models.BooleanField(default=False)
    estimate = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, default=ZERO
    )
    rates = models.JSONField(default=dict, blank=True)
    opened_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    # The sum of the reservation's entries' ``held`` up to an entry, moved forward under its
    # brand's lock (as the account's sums are): what it has left sums only the entries after
    # it, not one per message sent (a 100,000-message send summed 100,000 rows a batch).
    summed_upto_id = models.BigIntegerField(default=0)
    summed_held = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, default=ZERO
    )

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-opened_at", "-pk"]
        indexes = [
            models.Index(
                fields=["brand"], condition=Q(closed_at__isnull=True), name="credit_res_open"
            )
        ]

    def __str__(self) -> str:
        return f"Reservation {self.pk} (distribution {self.distribution_id})"


class CreditHold(models.Model):
    """Credits set aside for one message between its chunk's cover and its debit.

    Deleted when the message is debited, or when it closes without being handed over (the
    credits go back to the distribution's reservation). Bookkeeping only: the reserved sum
    lives in the ledger.
    """

    message = models.OneToOneField(
        "distributions.Message", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    reservation = models.ForeignKey(
        CreditReservation,
        on_delete=models.CASCADE,
        related_name="holds",
        db_index=False,  # credit_hold_reservation below
    )
    country = models.CharField(max_length=2, blank=True)
    segments = models.PositiveIntegerField(default=0)
    rate = models.DecimalField(max_digits=RATE_DIGITS, decimal_places=AMOUNT_PLACES)
    cost = models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["reservation"], name="credit_hold_reservation")]

    def __str__(self) -> str:
        return f"Hold of {self.cost} for message {self.message_id}"


class CreditEntryQuerySet(models.QuerySet):
    """Ledger rows are append-only: bulk updates and deletes are refused.

    (Deleting a whole brand still cascades: Django's collector does not go through here.)
    """

    def for_brand(self, brand):
        if brand is None:
            return self.none()
        return self.filter(brand=brand)

    def update(self, **kwargs):
        raise TypeError("Credit entries are append-only: add an entry instead of updating one.")

    def delete(self):
        raise TypeError("Credit entries are append-only: add an entry instead of deleting one.")


class CreditEntry(models.Model):
    """One movement of credits. Never changed, never deleted.

    ``amount`` changes the balance; ``held`` changes the reserved credits. Signs by kind:

    ============  ================  ===================================================
    kind          amount            held
    ============  ================  ===================================================
    grant         > 0               0
    purchase      > 0               0
    adjust        any (operator)    0
    reserve       0                 > 0  (a distribution starts, or tops up its cover)
    release       0                 < 0  (what a finished distribution did not use)
    debit         -cost (<= 0)      -(part of the cost taken from the reservation)
    usage         0                 0    (a self-service brand's message: recorded only)
    ============  ================  ===================================================

    A message has at most one debit or usage row (unique constraint): it is debited once,
    whatever retries or worker restarts happen.
    """

    class Kind(models.TextChoices):
        GRANT = "grant", "Grant"
        PURCHASE = "purchase", "Purchase"
        ADJUST = "adjust", "Adjustment"
        RESERVE = "reserve", "Reservation"
        RELEASE = "release", "Release"
        DEBIT = "debit", "Debit"
        USAGE = "usage", "Usage (self-service)"

    CREDITING = (Kind.GRANT, Kind.PURCHASE)
    PER_MESSAGE = (Kind.DEBIT, Kind.USAGE)

    brand_path = "brand"

    # brand, reservation and distribution: indexed by the composite indexes in Meta that start
    # with them (a second index of their own only slowed down each message's debit).
    brand = models.ForeignKey(
        Brand, on_delete=models.CASCADE, related_name="credit_entries", db_index=False
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    amount = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, default=ZERO
    )
    held = models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, default=ZERO)
    reservation = models.ForeignKey(
        CreditReservation,
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="entries",
        db_index=False,
    )
    distribution = models.ForeignKey(
        "distributions.Distribution",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="credit_entries",
        db_index=False,
    )
    project = models.ForeignKey(
        "projects.Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.ForeignKey(
        "distributions.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="credit_entries",
    )
    country = models.CharField(max_length=2, blank=True)
    segments = models.PositiveIntegerField(default=0)
    rate = models.DecimalField(
        max_digits=RATE_DIGITS, decimal_places=AMOUNT_PLACES, null=True, blank=True
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=300, blank=True)
    idempotency_key = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = CreditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "credit entries"
        constraints = [
            models.UniqueConstraint(
                fields=["message"],
                condition=Q(kind__in=["debit", "usage"], message__isnull=False),
                name="credit_entry_one_debit_per_message",
            ),
            models.UniqueConstraint(
                fields=["brand", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="credit_entry_unique_idempotency_key",
            ),
            models.CheckConstraint(
                condition=(
                    Q(kind__in=["grant", "purchase"], amount__gt=0, held=0)
                    | Q(kind="adjust", held=0)
                    | Q(kind="reserve", amount=0, held__gt=0)
                    | Q(kind="release", amount=0, held__lt=0)
                    | Q(kind="debit", amount__lte=0, held__lte=0)
                    | Q(kind="usage", amount=0, held=0)
                ),
                name="credit_entry_signs_by_kind",
            ),
        ]
        indexes = [
            models.Index(fields=["brand", "created_at"], name="credit_entry_brand_time"),
            # The entries after an account's or a reservation's checkpoint (``pk > upto``): one
            # index range each, not the key's every entry (credits.services).
            models.Index(fields=["brand", "id"], name="credit_entry_brand_tail"),
            models.Index(fields=["reservation", "id"], name="credit_entry_reservation"),
            models.Index(fields=["distribution", "kind"], name="credit_entry_distribution"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount} ({self.brand_id})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValidationError("Credit entries are append-only: add an entry instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Credit entries are append-only: add an entry instead.")

    @property
    def effect_on_available(self) -> Decimal:
        return self.amount - self.held
