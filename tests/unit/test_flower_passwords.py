"""Which passwords `jobq flower` refuses (app/ops/cli/flower.py): known defaults, however
dressed up, passwords under 12 characters, the user's own name; the message names the password."""

from __future__ import annotations

import pytest

from app.ops.cli.flower import basic_auth_problem, password_problem


@pytest.mark.parametrize(("user", "password", "says"), [
    ("admin", "change-me", "is a known default ('change-me')"),
    ("admin", "Change_Me!", "is a known default ('Change_Me!')"),
    ("admin", "Password123!", "is a known default ('Password123!')"),
    ("admin", "adminadmin2024", "is a known default ('adminadmin2024')"),
    ("flower", "flowerflower", "is a known default ('flowerflower')"),
    ("ops", "123456789012", "is a known default ('123456789012')"),
    ("academy-ops", "Academy-Ops", "is a known default ('Academy-Ops')"),  # the user's name
    ("ops", "Kx8-q2", "has 6 characters; at least 12 are needed"),
])
def test_a_weak_password_is_refused_and_named(user, password, says):
    problem = password_problem(user, password)
    assert problem is not None and says in problem and repr(user) in problem


@pytest.mark.parametrize("password", ["Kx8-q2Lr9-vTz", "correct horse battery staple",
                                      "pw-3f9a61c0b2d4", "changeme-but-not-really-9Qx"])
def test_a_long_password_of_its_own_is_taken(password):
    assert password_problem("ops", password) is None


def test_every_entry_of_several_is_checked():
    assert basic_auth_problem("ops:" + "Kx8-q2Lr9-vTz" + ",admin:change-me") is not None
    assert "user:password" in basic_auth_problem("ops:Kx8-q2Lr9-vTz,admin")
    assert basic_auth_problem("ops:Kx8-q2Lr9-vTz,ci:pw-3f9a61c0b2d4") is None
