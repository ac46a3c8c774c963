"""Start-up hooks (core/hooks.py): how a lower app triggers a higher one without importing it."""

import pytest

from core.hooks import Hook
from distributions import hooks as distribution_hooks
from projects.hooks import project_resumed
from surveys.hooks import link_opened, response_completed


def test_a_hook_calls_its_receivers_in_order_with_the_keywords_given():
    hook = Hook("test.happened")
    calls = []
    hook.register(lambda **kwargs: calls.append(("first", kwargs)) or 1)
    hook.register(lambda **kwargs: calls.append(("second", kwargs)) or 2)
    assert hook.fire(thing=7) == [1, 2]
    assert calls == [("first", {"thing": 7}), ("second", {"thing": 7})]


def test_a_receiver_is_registered_once_and_its_errors_reach_the_caller():
    hook = Hook("test.failing")

    def receiver(**kwargs):
        raise RuntimeError("the write failed")

    hook.register(receiver)
    with pytest.raises(ValueError, match="already registered"):
        hook.register(receiver)
    with pytest.raises(RuntimeError, match="the write failed"):
        hook.fire()


def test_distributions_registered_its_receivers_at_start_up():
    assert project_resumed.receivers == (distribution_hooks.on_project_resumed,)
    assert link_opened.receivers == (distribution_hooks.on_link_opened,)
    assert response_completed.receivers == (distribution_hooks.on_response_completed,)
