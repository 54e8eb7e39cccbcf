"""A process pool with a progress bar that degrades to a plain loop for small jobs."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any

from tqdm import tqdm


def pool_map(
    fn: Callable[[Any], Any],
    jobs: list,
    workers: int,
    desc: str,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    unit: str = "piece",
    start_method: str = "fork",
) -> list:
    """``[fn(j) for j in jobs]`` over ``workers`` processes, in order, with a tqdm bar.

    Work that runs torch in the workers needs ``start_method="spawn"``: a forked child of a
    process that has already used torch's thread pool can deadlock in it.
    """
    if workers <= 1 or len(jobs) < 8:
        if initializer:
            initializer(*initargs)
        return [fn(j) for j in tqdm(jobs, desc=desc, unit=unit)]
    with mp.get_context(start_method).Pool(workers, initializer, initargs) as pool:
        return list(
            tqdm(
                pool.imap(fn, jobs, chunksize=max(1, min(8, len(jobs) // (4 * workers)))),
                total=len(jobs),
                desc=desc,
                unit=unit,
            )
        )
