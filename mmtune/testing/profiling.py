"""Peak tensor memory of a block of CPU work, from torch's memory profiler (tests and bench/).

The profiler records every tensor allocated and freed while it runs: on the CPU that is what
`torch.cuda.max_memory_allocated` measures on a GPU (no allocator slack, no CUDA context).
The timeline is read from torch's `MemoryProfileTimeline`, the computation behind the profiler's
`export_memory_timeline`, which torch 2.13 deprecates in favour of a CUDA-only memory snapshot
(there is no CPU replacement).
"""

from __future__ import annotations


class ProfiledPeak:
    """`with ProfiledPeak() as p: ...` -> `p.peak`: the most bytes of CPU tensors alive at once
    during the block; `p.start`: the bytes alive when it began (tensors made before it)."""

    def __init__(self):
        self.peak = self.start = 0
        self._prof = None

    def __enter__(self) -> "ProfiledPeak":
        from torch.profiler import ProfilerActivity, profile

        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                             with_stack=True)
        self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._prof.__exit__(*exc)
        if exc[0] is not None:
            return
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        _, sizes = MemoryProfileTimeline(self._prof._memory_profile())._coalesce_timeline("cpu")
        self.peak = max(sum(point) for point in sizes)
        self.start = sum(sizes[0])
