"""Money before a submission: the estimate as a range, and the caps that refuse a submission before any upload.
No Dagster.

Expected output per request is the median (p50) of `completion_tokens` this pipeline's answers from this
model have used so far (`batch_outcomes`), or the declaration's guess when there is no history yet; the upper
bound is every request's own output cap. Caps compare the upper bound with the limit, at batch prices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import date

import duckdb
import orjson

from batch_assets.batching.money import format_usd
from batch_assets.batching.pricing import Cost, UnknownModelPrice, estimate_cost
from batch_assets.batching.request_files import RequestFile
from batch_assets.ledger.store import Ledger
from batch_assets.pipelines.spec import BudgetPolicy
from batch_assets.sources import month_start
from batch_assets.warehouse.schema import table_exists

CAP_SETTINGS_HINT = ("raise it in the run config of {requests} (launchpad: ops: {requests}: config: {field}) or "
                     "with {env}; set it to null to turn the cap off")


class BudgetExceeded(ValueError):
    """A submission whose upper estimate is over a cap: refused before anything was uploaded."""


@dataclass(frozen=True)
class OutputGuess:
    per_request: float  # expected output tokens per request
    source: str  # "history (p50 of N answers)" or "the pipeline's default"


@dataclass(frozen=True)
class Estimate:
    """A plan's cost range; `upper` is None when some request sets no output cap (no upper bound)."""

    expected: Cost
    upper: Cost | None
    output_guess: OutputGuess

    def describe(self) -> str:
        upper = format_usd(self.upper.batch_usd) if self.upper else "unbounded (no max_tokens)"
        return (f"{format_usd(self.expected.batch_usd)} expected, at most {upper} at batch prices "
                f"(output guess: {self.output_guess.per_request:g} tokens/request from {self.output_guess.source})")

    def to_json(self) -> str:
        return orjson.dumps({"expected": dataclasses.asdict(self.expected),
                             "upper": dataclasses.asdict(self.upper) if self.upper else None}).decode()


def expected_output(con: duckdb.DuckDBPyConnection, pipeline: str, model: str, default: int) -> OutputGuess:
    """p50 of completion tokens of this pipeline's successful answers to `model`, else `default`."""
    if table_exists(con, "batch_outcomes"):
        n, median = con.execute(
            "SELECT count(completion_tokens), quantile_cont(completion_tokens, 0.5) FROM batch_outcomes "
            "WHERE pipeline = $p AND requested_model = $m AND outcome = 'succeeded' AND source = 'batch'",
            {"p": pipeline, "m": model}).fetchall()[0]
        if n:
            return OutputGuess(float(median), f"history (p50 of {n} answers)")
    return OutputGuess(float(default), "the pipeline's default (no history yet)")


def estimate_plan(model: str, files: list[RequestFile], guess: OutputGuess) -> Estimate | None:
    """The plan's cost range; None when the model has no price."""
    requests = sum(f.n_requests for f in files)
    input_tokens = sum(f.input_tokens for f in files)
    caps = [f.max_output_tokens for f in files]
    upper_output = None if any(c is None for c in caps) else sum(c or 0 for c in caps)
    per_request = guess.per_request if upper_output is None or not requests else min(
        guess.per_request, upper_output / requests)
    try:
        expected = estimate_cost(model, input_tokens, math.ceil(per_request * requests))
        upper = None if upper_output is None else estimate_cost(model, input_tokens, upper_output)
    except UnknownModelPrice:
        return None
    return Estimate(expected, upper, guess)


def month_commitment(ledger: Ledger, con: duckdb.DuckDBPyConnection, month: date) -> float:
    """Batch dollars a month already stands for, every pipeline: what its collected batches cost, plus the upper
    estimate of its plans still in flight (conservative: a plan partly collected counts in both)."""
    spent = 0.0
    if table_exists(con, "batch_costs"):
        spent = float(con.execute("SELECT coalesce(sum(batch_usd), 0) FROM batch_costs WHERE month = $m",
                                  {"m": month_start(month)}).fetchall()[0][0])
    for plan in ledger.open_plans():
        if plan.month != month.isoformat() or not plan.estimate:
            continue
        raw = orjson.loads(plan.estimate)
        bound = raw.get("upper") or raw.get("expected") or {}
        spent += float(bound.get("batch_usd") or 0.0)
    return spent


def check_caps(policy: BudgetPolicy, estimate: Estimate | None, *, pipeline: str, month: date,
               committed: float, requests_asset: str) -> None:
    """Raises :class:`BudgetExceeded` saying the estimate, the cap and how to raise it."""
    if policy.max_cost_per_submission_usd is None and policy.max_cost_per_month_usd is None:
        return
    if estimate is None:
        raise BudgetExceeded(
            f"{pipeline} {month:%Y-%m}: a budget cap is set but the model has no price in the table, so the cost "
            "cannot be bounded: add the model to batch_assets.batching.pricing.PRICES, or turn the caps off")
    if estimate.upper is None:
        raise BudgetExceeded(
            f"{pipeline} {month:%Y-%m}: a budget cap is set but the requests set no max_tokens, so their cost has "
            f"no upper bound: set max_tokens in the run config of {requests_asset}")
    upper = estimate.upper.batch_usd
    cap = policy.max_cost_per_submission_usd
    if cap is not None and upper > cap:
        raise BudgetExceeded(
            f"{pipeline} {month:%Y-%m} was not submitted: it may cost up to {format_usd(upper)} at batch prices "
            f"(expected {format_usd(estimate.expected.batch_usd)}), over the per-submission cap of "
            f"{format_usd(cap)}; nothing was uploaded. To go ahead, "
            + CAP_SETTINGS_HINT.format(requests=requests_asset, field="max_cost_per_submission_usd",
                                       env="BATCH_ASSETS_MAX_COST_PER_SUBMISSION_USD"))
    cap = policy.max_cost_per_month_usd
    if cap is not None and committed + upper > cap:
        raise BudgetExceeded(
            f"{pipeline} {month:%Y-%m} was not submitted: the month already stands for {format_usd(committed)} "
            f"(every pipeline: collected batches plus the upper bound of those in flight) and this submission may "
            f"add up to {format_usd(upper)}, over the monthly cap of {format_usd(cap)}; nothing was uploaded. "
            "To go ahead, " + CAP_SETTINGS_HINT.format(requests=requests_asset, field="max_cost_per_month_usd",
                                                        env="BATCH_ASSETS_MAX_COST_PER_MONTH_USD"))
