"""Run mode: split the numbers 1..items into weighted partitions over the workers."""

from __future__ import annotations

from keepwarm import Partition, WorkPlan


class Manager:
    def __init__(self, args: object) -> None:
        self.items = int(getattr(args, "items", 2000))
        self.partitions = int(getattr(args, "partitions", 8))

    def build_distribution(self, workers: list[str]) -> WorkPlan:
        size = -(-self.items // self.partitions)
        plan: dict[str, list[Partition]] = {worker: [] for worker in workers}
        for index in range(self.partitions):
            first = index * size + 1
            last = min(self.items, first + size - 1)
            if first > last:
                break
            partition = Partition(name=f"p{index}", weight=last - first + 1, data=[first, last])
            plan[workers[index % len(workers)]].append(partition)
        return WorkPlan(workers=plan, partition_key="range", weights_key="numbers", unit="numbers")
