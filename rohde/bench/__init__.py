"""`rohde bench`: side-by-side performance figures of the serving path, written to `bench/`.

Every figure comes from real parts: pylsl outlets in their own processes, the real server
(`rohde serve` in a subprocess), real WebSocket clients, ONNX Runtime and PyTorch on the same
weights, MNE-LSL's `StreamLSL` reading the same outlet as our ingestion. Sections:

- `inference`: ONNX Runtime against PyTorch eager, per window and batched (1-32 windows).
- `ingestion`: CPU seconds per stream-second of our ingestion against MNE-LSL and plain pylsl loops.
- `latency`: decision latency (outlet push of a window's last sample -> WebSocket client receipt)
  at several stream counts, its split into stages, server CPU and memory, and the capacity (largest
  stream count served without lost samples and with p99 under the limit).
- `soak`: resident memory of the server over a long run at a fixed stream count.

Timings on a shared machine vary: the figures are medians and percentiles of one run, reported
with the machine, the command and the date, and never used as pass/fail checks.

Internal roles (outlet process, ingestion consumers) run through `python -m rohde.bench ROLE`.
"""
