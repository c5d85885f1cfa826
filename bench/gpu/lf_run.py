"""Run the peer-bench kit's run_lf.py unchanged and add the CUDA peak memory to its RESULT line.

    python3 bench/gpu/lf_run.py .gpu/peer/run_lf.py .gpu/peer/lf_sft.yaml key=value ...
"""

from __future__ import annotations

import json
import runpy
import sys


class ResultWithMemory:
    """stdout that rewrites the `RESULT {json}` line with torch.cuda's peak memory added."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        if text.startswith("RESULT "):
            import torch

            result = json.loads(text[len("RESULT "):])
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                result["cuda_peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                result["cuda_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
            text = "RESULT " + json.dumps(result)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = [script, *sys.argv[2:]]
    sys.stdout = ResultWithMemory(sys.stdout)
    runpy.run_path(script, run_name="__main__")
