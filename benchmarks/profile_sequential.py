"""Where a SASRec-family training epoch spends its time: torch profiler over one epoch.

Prints the operators with the most self CPU time (one epoch of training plus its
validation pass) as a share of the total, so speed work starts from measurements.

``python benchmarks/profile_sequential.py [--dataset D] [--model esasrec] [--set FIELD=JSON ...] [--top 15] [--quick]``
"""

from __future__ import annotations

import time

from common import finish, parser, prepare, with_overrides
from sequential import DROPOUT, MAX_LEN, SHORT_SEQUENCE_MAX_LEN, VARIANTS, variant_config


def main() -> None:
    arguments = parser("profile_sequential", ["ml-1m-seq/ml-1m.txt"], VARIANTS)
    arguments.set_defaults(model=["esasrec"])
    arguments.add_argument("--set", nargs="+", default=[], dest="overrides", metavar="FIELD=JSON")
    arguments.add_argument("--top", type=int, default=15)
    args = arguments.parse_args()
    dataset, variant = args.dataset[0], args.model[0]

    import torch
    from torch.profiler import ProfilerActivity, profile

    from recmodels.models.sasrec import SASRec

    split = prepare(args.data_dir, dataset, args.quick).split
    max_len = MAX_LEN.get(dataset, SHORT_SEQUENCE_MAX_LEN)
    config = variant_config(variant, max_len, args.seed, epochs=1, dropout=DROPOUT.get(dataset, 0.2))
    model = SASRec(with_overrides(config, args.overrides))
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        model.fit(split)
    seconds = time.perf_counter() - started
    events = [event for event in profiler.key_averages() if event.self_cpu_time_total > 0]
    total = sum(event.self_cpu_time_total for event in events)
    events.sort(key=lambda event: event.self_cpu_time_total, reverse=True)
    shares = {event.key: round(event.self_cpu_time_total / total, 4) for event in events[: args.top]}
    for name, share in shares.items():
        print(f"{share:7.1%}  {name}")
    finish(
        "profile_sequential",
        [{"dataset": dataset, "model": variant, "overrides": args.overrides, "threads": torch.get_num_threads()}],
        profiled_seconds=round(seconds, 1),
        epoch_seconds=round(model.history.seconds[0], 1),
        self_cpu_share=shares,
    )


if __name__ == "__main__":
    main()
