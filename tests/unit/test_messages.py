"""Task messages as they come off the broker (app.broker.messages): a malformed one is named
for what is wrong with it, so the worker refuses it instead of dying on it."""

from __future__ import annotations

import pytest

from app.broker.messages import message_problem

V2 = {"task": "system.exec.echo", "id": "9f0c6d0e-1a53-4c1e-9d0b-6f7f3f1b2a10"}


def test_a_well_formed_message_of_either_protocol_has_no_problem():
    assert message_problem(V2, [[], {"tenant_id": "t"}, {"callbacks": None}]) is None
    assert message_problem(V2, [[], {}, None]) is None
    assert message_problem({}, {"id": "x", "task": "t", "args": [], "kwargs": {}}) is None


@pytest.mark.parametrize(("headers", "payload", "says"), [
    (V2, {"tenant_id": "t"}, "its body is not [args, kwargs, embed] but a dict"),
    (V2, [[], {}], "its body is not [args, kwargs, embed] but a list of 2"),
    (V2, "[[], {}, {}]", "its body is not [args, kwargs, embed] but a str"),
    (V2, [[], {}, []], "its embed is a list, not an object"),
    (V2, [{}, {}, {}], "its args are a dict, not a list"),
    (V2, [[], [], {}], "its kwargs are a list, not an object"),
    ({**V2, "id": None}, [[], {}, {}], "its task id is None, not a string"),
    ({}, ["not", "an", "object"], "its body is a list, not an object"),
])
def test_a_malformed_message_is_named_for_what_is_wrong(headers, payload, says):
    assert message_problem(headers, payload) == says


def test_the_kombu_patch_names_the_release_it_was_written_for_when_another_runs():
    from app.broker.kombu_patch import WRITTEN_FOR, version_problem

    written_for = ".".join(map(str, WRITTEN_FOR))
    assert version_problem(f"{written_for}.3") is None
    said = version_problem("5.8.0")
    assert said and "kombu 5.8.0" in said and f"{written_for}.x" in said
    assert "app/broker/kombu_patch.py" in said
    assert version_problem("6.0.0b1") is not None
