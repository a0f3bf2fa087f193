"""Template rendering: one Jinja2 environment (autoescaped), one ``page`` helper."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from keyfob.dashboard.security import csrf_for
from keyfob.vault import Principal

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

NAV = (
    ("overview", "/ui/", "Overview"),
    ("credentials", "/ui/credentials", "Credentials"),
    ("agents", "/ui/agents", "Agents"),
    ("grants", "/ui/grants", "Grants"),
    ("leases", "/ui/leases", "Leases"),
    ("usage", "/ui/usage", "Usage"),
    ("audit", "/ui/audit", "Audit"),
    ("users", "/ui/users", "Users"),
)

# Messages a redirect may point at by code (a redirect never carries free text).
NOTICES = {
    "created": "Saved.",
    "updated": "Updated.",
    "deleted": "Deleted.",
    "restored": "Restored.",
    "purged": "Purged: the set, its versions and its grants are gone for good.",
    "profile-saved": "Profile saved (a new version was made).",
    "revoked": "Revoked.",
    "approved": "Approved.",
    "denied": "Denied.",
    "rolled-back": "Rolled back (a new version was made).",
    "disabled": "Disabled.",
    "enabled": "Enabled.",
    "signed-out": "Signed out.",
    "password-set": "Password set; the user's other sessions ended.",
}


def page(
    request: Request,
    template: str,
    user: Principal | None,
    *,
    section: str = "",
    status_code: int = 200,
    **values: Any,
) -> Response:
    """Render ``template`` with the layout's values (user, nav, CSRF token, notice)."""
    notice = NOTICES.get(request.query_params.get("done", ""))
    return templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "nav": NAV,
            "section": section,
            "csrf": csrf_for(request) if user else "",
            "notice": notice,
            **values,
        },
        status_code=status_code,
    )


PER_PAGE = 50


def search_of(request: Request, name: str = "q") -> str:
    """A search box's value as sent (trimmed, capped)."""
    return request.query_params.get(name, "").strip()[:200]


def pager(request: Request, next_cursor: str | None, param: str = "after") -> dict[str, str | None]:
    """Links for keyset paging: the next page (cursor in ``param``) and back to the first."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in (param, "done")]
    here = request.url.path
    return {
        "next": f"{here}?{urlencode([*kept, (param, next_cursor)])}" if next_cursor else None,
        "first": f"{here}?{urlencode(kept)}" if request.query_params.get(param) else None,
    }


def done(url: str, code: str) -> RedirectResponse:
    """Post/redirect/get: back to ``url`` with a notice code, never free text."""
    joiner = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{joiner}done={code}", status_code=303)
