"""The demo feature store that seeds `adapters.local.workspace.LocalWorkspace` (and the Azure replay of it).

`contoso-features` holds the features fraud-model and churn-model train on: `transactions`
(keyed on an account, materialized offline and online every 3 hours, version 2 current) and
`customers` (keyed on a customer, offline only, daily). Every time is relative to `now`, so a test
with a fixed clock always gets the same store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.service import Feature, FeatureEntity, FeatureSet, FeatureStore, Materialization

STORE = "contoso-features"


@dataclass(frozen=True)
class DemoFeatureStore:
    store: FeatureStore
    entities: list[FeatureEntity]
    feature_sets: list[tuple[FeatureSet, datetime]]          # each version with its creation time
    materializations: list[tuple[str, str, Materialization]]  # (feature set, version, job)


def _transactions(version: str) -> tuple[Feature, ...]:
    features = [
        Feature("transaction_amount_7d_sum", "Double", "Sum of card transaction amounts over 7 days."),
        Feature("transaction_count_7d", "Long", "Number of card transactions over 7 days."),
        Feature("transaction_amount_30d_avg", "Double", "Average transaction amount over 30 days."),
        Feature("distinct_merchants_7d", "Integer", "Distinct merchants over 7 days."),
    ]
    if version == "2":
        features += [Feature("foreign_transaction_ratio_30d", "Float", "Share of foreign-currency transactions."),
                     Feature("night_transaction_ratio_30d", "Float", "Share of transactions between 00:00 and 05:00.")]
    return tuple(features)


def build_feature_stores(now: datetime) -> list[DemoFeatureStore]:
    account = FeatureEntity("account", "1", (("account_id", "String"),), "A card account.")
    customer = FeatureEntity("customer", "1", (("customer_id", "String"),), "A retail customer.")
    fraud_tags = {"team": "fraud", "used_by": "fraud-model"}
    growth_tags = {"team": "growth", "used_by": "churn-model"}

    def fs(name: str, version: str, description: str, tags: dict[str, str], entity: FeatureEntity,
           features: tuple[Feature, ...], offline: bool, online: bool, schedule: str) -> FeatureSet:
        return FeatureSet(name, version, STORE, description, tags, "Production", (entity,), features, offline,
                          online, schedule)

    sets = [
        (fs("transactions", "1", "Rolling card-transaction aggregates per account.", fraud_tags, account,
            _transactions("1"), True, False, "every 1 day at 02:00"), now - timedelta(days=120)),
        (fs("transactions", "2", "Rolling card-transaction aggregates per account, with foreign and night ratios.",
            fraud_tags, account, _transactions("2"), True, True, "every 3 hours"), now - timedelta(days=21)),
        (fs("customers", "1", "Customer profile and tenure features.", growth_tags, customer,
            (Feature("age", "Integer", "Age in whole years."), Feature("tenure_days", "Integer", "Days since sign-up."),
             Feature("is_premium", "Boolean", "Holds a premium plan."), Feature("country", "String", "ISO 3166 code."),
             Feature("support_tickets_90d", "Long", "Support tickets over 90 days.")),
            True, False, "every 1 day at 03:00"), now - timedelta(days=90)),
    ]

    def job(name: str, status: str, kind: str, hours_ago: float, window_hours: float) -> Materialization:
        end = (now - timedelta(hours=hours_ago)).replace(minute=0, second=0, microsecond=0)
        return Materialization(name, status, kind, end - timedelta(hours=window_hours), end,
                               end + timedelta(minutes=4))

    materializations = [
        ("transactions", "1", job("mat_txn1_backfill_6k2p", "Completed", "backfill", 24 * 120, 24 * 365)),
        ("transactions", "2", job("mat_txn2_backfill_9q4d", "Completed", "backfill", 24 * 21, 24 * 365)),
        ("transactions", "2", job("mat_txn2_recur_3m8x", "Completed", "recurrent", 5, 3)),
        ("transactions", "2", job("mat_txn2_recur_7w1c", "Completed", "recurrent", 2, 3)),
        ("customers", "1", job("mat_cust1_backfill_2h5r", "Completed", "backfill", 24 * 90, 24 * 730)),
        ("customers", "1", job("mat_cust1_recur_8z3n", "Failed", "recurrent", 20, 24)),
    ]
    store = FeatureStore(STORE, "westeurope", "Shared features of the fraud and growth teams (local demo).")
    return [DemoFeatureStore(store, [account, customer], sets, materializations)]
