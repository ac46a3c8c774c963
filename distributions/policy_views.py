"""The brand's contact frequency rules page (docs/policies.md): brand admins."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views import View

from brands.roles import Role
from brands.views import BrandPageMixin
from distributions.forms import FrequencyRuleForm
from distributions.models import FrequencyRule
from distributions.policies import frequency_rule_delete, frequency_rule_save
from projects.models import Project


class FrequencyRulesView(BrandPageMixin, View):
    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN

    def _projects(self):
        return list(self.scoped(Project.objects.order_by("name")))

    def get(self, request, form=None, status=200):
        projects = self._projects()
        return render(
            request,
            "distributions/frequency_rules.html",
            {
                "brand": self.brand,
                "rules": self.scoped(FrequencyRule.objects.select_related("project")),
                "form": form or FrequencyRuleForm(projects=projects),
            },
            status=status,
        )

    def post(self, request):
        if request.POST.get("action") == "delete":
            rule = self.get_scoped(FrequencyRule, pk=request.POST.get("rule_id"))
            frequency_rule_delete(rule=rule, role=self.role)
            messages.success(request, f"Deleted the rule {rule.name}.")
            return redirect("distributions:frequency_rules")
        projects = self._projects()
        form = FrequencyRuleForm(request.POST, projects=projects)
        if form.is_valid():
            try:
                frequency_rule_save(
                    brand=self.brand,
                    actor=request.user,
                    role=self.role,
                    **form.rule_fields(projects),
                )
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                messages.success(request, "Rule added.")
                return redirect("distributions:frequency_rules")
        return self.get(request, form=form, status=400)
