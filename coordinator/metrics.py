"""The coordinator's Prometheus metrics beyond per-model inference counts (shardnet.stats):
shards, spot checks, the worker table, slashes and settlements."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from shardnet.coordinator.ledger import Ledger
from shardnet.coordinator.registry import WorkerRegistry

SHARDS = Counter("shardnet_shards", "Shard attempts sent to workers, by outcome", ["outcome"])
SPOT_CHECKS = Counter("shardnet_spot_checks", "Shards re-executed on another worker and compared")
MISMATCHES = Counter("shardnet_spot_check_mismatches", "Spot checks whose answers disagreed")


class CoordinatorCollector(Collector):
    """Read at scrape time from the worker table and the ledger."""

    def __init__(self, registry: WorkerRegistry, ledger: Ledger) -> None:
        self.registry = registry
        self.ledger = ledger

    def collect(self):
        workers = self.registry.all()
        table = GaugeMetricFamily("shardnet_workers", "Workers in the table", labels=["state"])
        table.add_metric(["live"], sum(not w.suspect for w in workers))
        table.add_metric(["suspect"], sum(w.suspect for w in workers))
        yield table
        rates = GaugeMetricFamily(
            "shardnet_worker_rows_per_second", "Measured throughput (EWMA)", labels=["worker"]
        )
        strikes = GaugeMetricFamily("shardnet_worker_strikes", "Lost verdicts", labels=["worker"])
        for w in workers:
            rates.add_metric([w.id], max(w.rates.values(), default=0.0))
            strikes.add_metric([w.id], self.registry.strikes(w.id))
        yield rates
        yield strikes
        slashes = CounterMetricFamily("shardnet_slashes", "Slashing submissions", labels=["status"])
        for status in ("pending", "slashed", "failed"):
            slashes.add_metric([status], len(self.ledger.verdicts(slash_status=status)))
        yield slashes
        settlements = CounterMetricFamily(
            "shardnet_settlements", "Job settlements", labels=["status"]
        )
        gas = CounterMetricFamily("shardnet_settlement_gas", "Gas used by settle transactions")
        value = CounterMetricFamily("shardnet_settlement_value_wei", "Wei charged in settlements")
        rows = self.ledger.recent_settlements(10**9)
        for status in ("running", "pending", "settled", "failed"):
            settlements.add_metric([status], sum(r.status == status for r in rows))
        gas.add_metric([], sum(r.gas_used or 0 for r in rows))
        value.add_metric([], sum(r.charge_wei for r in rows if r.status == "settled"))
        yield settlements
        yield gas
        yield value


def register_collector(registry: WorkerRegistry, ledger: Ledger) -> CoordinatorCollector:
    collector = CoordinatorCollector(registry, ledger)
    REGISTRY.register(collector)
    return collector
