"""The signed-in home, the ledger history with its CSV export, and the example paid feature."""

from __future__ import annotations

import csv
import io
from datetime import datetime

from flask import Blueprint, Response, abort, g, render_template, request, stream_with_context, url_for
from wtforms.fields.choices import SelectChoice

from ... import alerts, catalog, credits, generations, localtime, plans, teams, yearly
from ...access import team_role_required
from ...billing import overage, recharge
from ...credits import history, limits, usage
from ...extensions import db
from ...models import ENTRY_KINDS, GenerationRun
from ..billing.views import purchase_context
from . import charts
from .forms import GenerateForm, HistoryFilterForm
from .generation import fake_generation

bp = Blueprint("dashboard", __name__)


@bp.get("/dashboard")
@team_role_required("member")
def index():  # type: ignore[no-untyped-def]
    balance = credits.balance(g.team.id)
    recent, _ = history.page(g.team.id, history.Filters(one_per_event=True), size=8)
    below = [level for level in limits.thresholds(g.team.id) if balance.available < level]
    outlook = plans.outlook(g.team, balance.plan)
    meter = charts.meter(balance.plan, balance.purchased, balance.other, balance.held, outlook.allowance)
    return render_template(
        "dashboard/index.html",
        balance=balance,
        plan=plans.plan_of(g.team),
        outlook=outlook,
        meter=meter,
        meter_filled=charts.filled_width(meter),
        buckets=charts.BUCKETS,
        chart=charts.usage_chart(history.usage_by_day(g.team.id)),
        chart_size=(charts.CHART_WIDTH, charts.CHART_HEIGHT, charts.CHART_BOTTOM),
        recent=history.lines(g.team.id, recent),
        summary=recharge.summary(g.team.id),
        low_balance=bool(below),
        low_threshold=min(below) if below else None,
        paid_year=yearly.current_year(g.team.id),
        overage=overage.summary(g.team),
        **purchase_context(balance),
    )


def _filters(*, people: bool = True) -> tuple[HistoryFilterForm, history.Filters | None]:
    """The history's filters from the query string; ``None`` filters when the form has field errors.

    ``kind`` takes a kind named for people (``history.CATEGORIES``) or a ledger kind (``ENTRY_KINDS``).
    """
    form = HistoryFilterForm(request.args, meta={"csrf": False})
    form.kind.choices = {
        "": [SelectChoice("", "All kinds")],
        "What happened": [SelectChoice(code, name) for code, name in history.CATEGORIES.items()],
        "Ledger entry kind": [
            SelectChoice(kind, kind.title()) for kind in ENTRY_KINDS if kind not in history.CATEGORIES
        ],
    }
    form.feature.choices = [SelectChoice("", "All features")] + [
        SelectChoice(f.code, f.name) for f in catalog.FEATURES.values()
    ]
    members, keys = usage.names(g.team.id)
    form.member.choices = [SelectChoice("", "Everyone")] + [
        SelectChoice(str(user_id), name) for user_id, name in sorted(members.items(), key=lambda item: item[1])
    ]
    form.api_key.choices = [SelectChoice("", "Any key or none")] + [
        SelectChoice(str(key_id), f"{name} ({prefix})") for key_id, (name, prefix) in sorted(keys.items())
    ]
    if request.args and not form.validate():
        return form, None
    kind = form.kind.data or None
    since, until = history.days(form.since.data, form.until.data, zone=localtime.viewer_zone())
    return form, history.Filters(
        kind=kind if kind in ENTRY_KINDS and kind not in history.CATEGORIES else None,
        category=kind if kind in history.CATEGORIES else None,
        feature=form.feature.data or None,
        since=since,
        until=until,
        member_id=int(form.member.data) if form.member.data else None,
        api_key_id=int(form.api_key.data) if form.api_key.data else None,
        one_per_event=people,
    )


def _cursor(value: str | None) -> tuple[datetime, int] | None:
    if not value:
        return None
    try:
        return history.decode_cursor(value)
    except ValueError:
        abort(400, "That page link is not valid.")


FILTER_NAMES = ("kind", "feature", "member", "api_key", "since", "until")


@bp.get("/credits/history")
@team_role_required("member")
def history_page():  # type: ignore[no-untyped-def]
    """One row per thing that happened (``?view=ledger``: every ledger entry), newest first."""
    ledger_view = request.args.get("view") == "ledger"
    form, filters = _filters(people=not ledger_view)
    args = {k: v for k, v in request.args.items() if k != "after" and v}
    if filters is None:  # field errors: the form says what to fix, the page stays usable
        return render_template(
            "dashboard/history.html", form=form, lines=[], invalid=True, ledger_view=ledger_view, args=args
        ), 400
    rows, after = history.page(g.team.id, filters, after=_cursor(request.args.get("after")))
    filtered = any(request.args.get(name) for name in FILTER_NAMES)
    other_view = {k: v for k, v in args.items() if k != "view"} | ({} if ledger_view else {"view": "ledger"})
    return render_template(
        "dashboard/history.html",
        lines=history.lines(g.team.id, rows),
        form=form,
        invalid=False,
        ledger_view=ledger_view,
        args=args,
        summary=history.summary(g.team.id, filters) if filtered else None,
        next_url=url_for("dashboard.history_page", after=history.encode_cursor(*after), **args) if after else None,
        first_url=url_for("dashboard.history_page", **args) if request.args.get("after") else None,
        csv_url=url_for("dashboard.history_csv", **{k: v for k, v in args.items() if k != "view"}),
        other_view_url=url_for("dashboard.history_page", **other_view),
    )


@bp.get("/credits/history.csv")
@team_role_required("member")
def history_csv():  # type: ignore[no-untyped-def]
    """Every ledger entry that matches (holds included: the CSV is the ledger), times in UTC."""
    form, filters = _filters(people=False)
    if filters is None:
        abort(400, "Check the filters: " + "; ".join(f"{name}: {errors[0]}" for name, errors in form.errors.items()))
    team_id = g.team.id

    def lines():  # type: ignore[no-untyped-def]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            ["id", "created_at", "kind", "description", "feature", "amount", "balance_after", "held_change", "actor"]
        )
        # The header goes out at once and the first batch is small: the first byte does not wait for a
        # 64 kB buffer to fill, whatever the size of the export.
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        for row in history.stream(team_id, filters, first=50):
            entry = row.LedgerEntry
            writer.writerow(
                [
                    entry.id,
                    entry.created_at.isoformat(),
                    entry.kind,
                    _safe_cell(entry.description),
                    entry.feature or "",
                    entry.amount,
                    entry.balance_after,
                    entry.held_delta,
                    _safe_cell(history.actor_label(row)),
                ]
            )
            if buffer.tell() > 64_000:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    filename = f"credits-{g.team.slug}-{datetime.now():%Y%m%d}.csv"
    return Response(
        stream_with_context(lines()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# OWASP's list: spreadsheets run a cell starting with = + - @ as a formula, and one starting with a
# tab or a line break too, once the spreadsheet has stripped that leading whitespace.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def _safe_cell(text: str) -> str:
    """A cell a spreadsheet shows as text: formula starts get a leading quote."""
    return "'" + text if text[:1] in FORMULA_STARTS else text


@bp.route("/generate", methods=["GET", "POST"])
@team_role_required("member")
def generate():  # type: ignore[no-untyped-def]
    """The example paid feature: reserve the cost, do the work, charge what it cost (``starter.generations``).

    A repeated key (a double submit, a reload) shows the first run's stored result; it never runs twice.
    """
    form = GenerateForm()
    feature = catalog.FEATURES["ai_generation"]
    run, replayed = None, False
    if form.validate_on_submit():
        actor = teams.actor_for(g.membership)
        try:
            started = generations.start(
                g.team.id, f"generate:{form.idempotency_key.data}", form.prompt.data, feature=feature, actor=actor
            )
        except credits.InsufficientCredits as error:
            db.session.rollback()  # nothing was reserved: the same form (prompt and key) can run once topped up
            return _generate_page(form, feature, insufficient=error), 402
        except credits.SpendLimitReached as error:
            db.session.rollback()
            alerts.limit_refused(g.team.id, error)
            return render_template("dashboard/limit_reached.html", error=error, feature=feature), 403
        except credits.CreditError as error:
            db.session.rollback()
            if isinstance(error, credits.IdempotencyConflict):
                abort(409, "This form was already used for another prompt. Reload the page to run a new one.")
            abort(error.status, str(error))
        db.session.commit()  # the hold and the running run, before the work: no lock is held while it runs
        run, replayed = started.run, not started.first
        if started.first:
            run = _run_generation(run, form.prompt.data, feature, actor)
        if run.status == "running":
            abort(409, "This request is still running. Reload in a moment to see its result.")
        if run.status == "failed":
            abort(409, "This run did not finish and nothing was charged. Open the page again to start a new one.")
        form = GenerateForm(formdata=None, prompt=form.prompt.data)
    return _generate_page(form, feature, run=run, replayed=replayed)


def _generate_page(form: GenerateForm, feature: catalog.Feature, **context):  # type: ignore[no-untyped-def]
    """The feature's page: the prompt form, a warning when the balance cannot cover the reservation, the
    purchase dialog to top up in place (``form`` is the dialog's; the prompt form is ``generate_form``)."""
    balance = credits.balance(g.team.id)
    return render_template(
        "dashboard/generate.html",
        generate_form=form,
        feature=feature,
        balance=balance,
        short=balance.available < feature.credits,
        upgrade_plans=[p for p in catalog.PLANS.values() if p.monthly_credits > plans.plan_of(g.team).monthly_credits],
        run=context.pop("run", None),
        replayed=context.pop("replayed", False),
        insufficient=context.pop("insufficient", None),
        **purchase_context(),
    )


def _run_generation(run, prompt: str, feature: catalog.Feature, actor: credits.Actor):  # type: ignore[no-untyped-def]
    """Do the work (outside any transaction), then charge it and store the result, or give the hold back."""
    run_id = run.id
    try:
        result = fake_generation(prompt, feature.credits)  # your AI call goes here
    except Exception:
        generations.fail(db.session.get(GenerationRun, run_id), actor=actor)
        db.session.commit()
        raise
    try:
        run = generations.finish(run, result.text, result.credits, actor=actor)
    except credits.HoldNotActive:
        db.session.rollback()  # the work outlived its hold: nothing is charged, the result is dropped
        run = generations.fail(db.session.get(GenerationRun, run_id), actor=actor)
    db.session.commit()
    return run
