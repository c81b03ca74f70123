"""The operator UI's automation pages: API tokens (create, list, revoke), the Events page, and
the dashboard's 30-day traffic chart. AdminUI routes to these; they render its templates."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from withcache import events as ev
from withcache import tokens
from withcache.cache import Cache
from withcache.web.api import create_token, revoke_token
from withcache.web.chart import traffic_svg
from withcache.web.problems import Problem

EVENTS_PAGE = 50


def _field(request, name: str) -> str:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else ""


class AutomationPages:
    def __init__(self, cache: Cache):
        self.cache = cache

    async def traffic_chart(self) -> Any:
        days = await self.cache.traffic_days()
        return traffic_svg(days)

    async def tokens_context(self, request, actor: ev.Actor) -> dict[str, Any]:
        """The Tokens page; a POST to /admin/tokens/create or /revoke is done first."""
        context: dict[str, Any] = {"new_token": None, "secret": "", "token_error": None}
        path = request.path.decode("latin-1")
        if path.endswith("/create"):
            try:
                made, secret = await create_token(
                    self.cache, _field(request, "name").strip(), [_field(request, "scope")], actor
                )
                context.update(new_token=made, secret=secret)
            except Problem as e:
                request.setResponseCode(e.status)
                context["token_error"] = e.detail
        elif path.endswith("/revoke"):
            await revoke_token(self.cache, _field(request, "name"), actor)
        context["tokens"] = await self.cache.list_tokens()
        context["scopes"] = tokens.SCOPES
        return context

    async def events_context(self, request) -> dict[str, Any]:
        action, actor = _field(request, "action").strip(), _field(request, "actor").strip()
        try:
            page = max(1, int(_field(request, "page") or 1))
        except ValueError:
            page = 1
        # Pages by number reach events.MAX_OFFSET events deep (the API pages on by cursor).
        page = min(page, ev.MAX_OFFSET // EVENTS_PAGE + 1)
        offset = (page - 1) * EVENTS_PAGE
        found, total = await self.cache.query_events(action, actor, EVENTS_PAGE, offset)
        actors = await self.cache.event_actors()
        if total is None:  # more than events.COUNT_CAP match
            pages = max(page, -(-ev.COUNT_CAP // EVENTS_PAGE))
            older = len(found) == EVENTS_PAGE and offset + EVENTS_PAGE <= ev.MAX_OFFSET
        else:
            pages = max(1, -(-total // EVENTS_PAGE))
            older = page < pages

        def page_query(p: int) -> str:
            return urlencode(
                {k: v for k, v in (("action", action), ("actor", actor), ("page", p)) if v}
            )

        return {
            "events": found,
            "action": action,
            "actor": actor,
            "actions": ev.ACTIONS,
            "actors": actors,
            "page": page,
            "pages": pages,
            "older": older,
            "matches": total,
            "count_cap": ev.COUNT_CAP,
            "page_query": page_query,
        }
