"""Dashboard page: usage per day and per agent (bar charts drawn here as SVG, no script)
and every budget's standing, with a warning past 80%."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard.render import page
from keyfob.dashboard.security import current_user, vault_of

router = APIRouter()

WIDTH = 640
HEIGHT = 160
LABEL = 40  # room under the bars for their labels


def bars(rows: list[dict[str, Any]], measure: str) -> dict[str, Any]:
    """Bar geometry for ``rows`` by ``measure`` (cost, or requests when nothing cost)."""
    values = [float(r.get(measure) or 0) for r in rows]
    top = max(values, default=0) or 1.0
    step = WIDTH / max(len(rows), 1)
    width = max(step * 0.7, 2)
    out = []
    for i, (row, value) in enumerate(zip(rows, values, strict=True)):
        height = (value / top) * (HEIGHT - LABEL)
        out.append(
            {
                "x": round(i * step + (step - width) / 2, 1),
                "y": round(HEIGHT - LABEL - height, 1),
                "width": round(width, 1),
                "height": round(height, 1),
                "label": str(row["key"])[-10:],
                "label_x": round(i * step + step / 2, 1),
                "value": value,
            }
        )
    return {"bars": out, "width": WIDTH, "height": HEIGHT, "measure": measure, "top": top}


def _measure(report: dict[str, Any]) -> str:
    return "cost_usd" if report["total"]["cost_usd"] else "requests"


@router.get("/usage")
async def usage_page(request: Request) -> Response:
    user = await current_user(request)
    usage = vault_of(request).usage
    days = await usage.report("day")
    agents = await usage.report("agent")
    models = await usage.report("model")
    return page(
        request,
        "usage.html",
        user,
        section="usage",
        days=days,
        by_day=bars(days["groups"], _measure(days)),
        by_agent=bars(agents["groups"], _measure(agents)),
        models=models["groups"],
        budgets=days["budgets"],
    )
