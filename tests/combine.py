"""Run a Beam CombineFn the way a runner may: inputs split into parts, accumulated, merged."""

from __future__ import annotations


def combine_in_parts(fn, parts):
    """The merged accumulator of ``parts`` (lists of inputs), each accumulated separately."""
    accumulators = []
    for part in parts:
        acc = fn.create_accumulator()
        for item in part:
            acc = fn.add_input(acc, item)
        accumulators.append(acc)
    return fn.merge_accumulators(accumulators)
