"""Facts recorded beside every figure: the machine, and a process's CPU time and memory."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def machine_description() -> dict[str, Any]:
    """CPU, memory, load and library versions of this machine, recorded beside every figure."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        mem_kb = 0
    versions: dict[str, str] = {}
    for module in ("numpy", "scipy", "onnxruntime", "pylsl", "torch", "mne_lsl", "fastapi", "uvicorn", "websockets"):
        try:
            versions[module] = str(__import__(module).__version__)
        except Exception:  # not installed here: recorded as missing
            versions[module] = "missing"
    return {
        "platform": platform.platform(), "cpu": cpu, "logical_cpus": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024**2, 1), "load_avg_1_5_15": list(os.getloadavg()),
        "python": platform.python_version(), "versions": versions,
    }


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB; NaN when /proc does not say."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")
