"""Who may do what: one decorator states the team role a view needs."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort, flash, g, redirect, url_for
from flask_login import current_user, login_required

from .teams import has_role


def team_role_required(role: str = "member") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Log-in plus a current team in which the user has at least ``role`` (member < admin < owner)."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if g.team is None:
                flash("Create a team to continue.", "info")
                return redirect(url_for("teams.new"))
            if not has_role(g.membership, role):
                abort(403, f"You need to be a team {role} to do that.")
            return view(*args, **kwargs)

        return wrapped

    return decorator


def site_admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Site admins only; everyone else gets a 404, so the area does not advertise itself."""

    @wraps(view)
    @login_required
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_site_admin:
            abort(404)
        return view(*args, **kwargs)

    return wrapped
