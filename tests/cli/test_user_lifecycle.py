"""``keyfob user disable|enable|passwd|delete`` end to end: the real CLI, a real server.

Failed before the fix: the commands did not exist.
"""

from __future__ import annotations

import re

import httpx

from .conftest import Operator

PASSWORD = "correct horse battery staple"
NEW = "a brand new password, long enough"
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def sign_in(http: httpx.Client, name: str, password: str) -> int:
    form = http.get("/ui/login")
    match = _CSRF.search(form.text)
    assert match
    data = {"csrf": match.group(1), "name": name, "password": password}
    return http.post("/ui/login", data=data).status_code


def test_user_lifecycle_from_the_cli(operator: Operator) -> None:
    created = operator.json("user", "create", "alice", input=PASSWORD + "\n")
    with httpx.Client(base_url=operator.server.url) as browser:
        assert sign_in(browser, "alice", PASSWORD) == 303
        assert browser.get("/ui/").status_code == 200

        disabled = operator.json("user", "disable", "alice")
        assert disabled["id"] == created["id"]
        assert disabled["disabled_at"]
        assert browser.get("/ui/").status_code == 303
        assert sign_in(browser, "alice", PASSWORD) == 401

        text = operator.ok("user", "enable", "alice").stdout
        assert text.startswith("enabled dashboard user alice")
        assert sign_in(browser, "alice", PASSWORD) == 303

        changed = operator.ok("user", "passwd", "alice", input=NEW + "\n")
        assert NEW not in changed.output
        assert "sessions ended" in changed.stdout
        assert browser.get("/ui/").status_code == 303
        assert sign_in(browser, "alice", PASSWORD) == 401
        assert sign_in(browser, "alice", NEW) == 303

        refused = operator("user", "delete", "alice")
        assert refused.exit_code != 0
        assert "--yes" in refused.output
        deleted = operator.json("user", "delete", "alice", "--yes")
        assert deleted["deleted"] is True
        assert browser.get("/ui/").status_code == 303
    assert operator.json("user", "list")["items"] == []
    missing = operator("user", "disable", "alice")
    assert missing.exit_code != 0
    assert operator.mentions(PASSWORD) == 0
    assert operator.mentions(NEW) == 0
