"""Create (or refresh) the demo brand, its admin login and a demo project with participants."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from brands.models import Brand
from brands.roles import Role
from brands.services import brand_create, membership_set
from participants.models import Participant
from participants.services import participant_create
from projects.models import Project
from projects.services import project_change_stage, project_create

DEMO_PEOPLE = [
    ("P001", "Ada", "Lovelace", "ada@example.com", "ada", "+14155550101", "Manager", "Sales"),
    ("P002", "Alan", "Turing", "alan@example.com", "alan", "+447911123456", "Employee", "R&D"),
    ("P003", "Grace", "Hopper", "grace@example.com", "grace", "+14155550103", "Manager", "R&D"),
    (
        "P004",
        "Katherine",
        "Johnson",
        "kj@example.com",
        "kjohnson",
        "+14155550104",
        "Employee",
        "Sales",
    ),
    ("P005", "Marie", "Curie", "marie@example.com", "mcurie", "+33612345678", "Employee", "R&D"),
    ("P006", "Hedy", "Lamarr", "hedy@example.com", "hedy", "", "Employee", "Sales"),
]


class Command(BaseCommand):
    help = "Seed a demo brand with an admin login and a demo project (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default=settings.RELAY_DEMO_PASSWORD)

    @transaction.atomic
    def handle(self, *args, username, password, **options):
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=username,
            defaults={"is_staff": True, "is_superuser": True, "email": "admin@example.com"},
        )
        if created:
            user.set_password(password)
            user.save()
        brand = Brand.objects.filter(slug="demo").first() or brand_create(
            name="Demo Brand", slug="demo", default_country="US", time_zone="America/New_York"
        )
        membership_set(brand=brand, user=user, role=Role.BRAND_ADMIN)
        project = Project.objects.filter(brand=brand, name="Employee pulse").first()
        if project is None:
            project = project_create(
                brand=brand, name="Employee pulse", kind=Project.Kind.ENGAGEMENT, actor=user
            )
            project_change_stage(project=project, stage=Project.Stage.ACTIVE, actor=user)
        for pid, first, last, email, uname, phone, role, team in DEMO_PEOPLE:
            if Participant.objects.filter(project=project, person__person_id=pid).exists():
                continue
            participant_create(
                project=project,
                role=role,
                actor=user,
                person_id=pid,
                first_name=first,
                last_name=last,
                email=email,
                username=uname,
                phone=phone,
                metadata={"Team": team},
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo brand ready: log in as '{username}' with password "
                f"'{password if created else '(unchanged)'}'"
            )
        )
