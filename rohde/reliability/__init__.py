"""`rohde reliability`: the fault matrix run against real parts, and `docs/reliability.md`.

Every case starts the real server (`rohde serve` through the process harness) with a real ONNX
package, real LSL outlets in subprocesses and real HTTP and WebSocket clients on loopback, injects
one fault, and measures what happened: a verdict against a stated expectation, recovery time,
windows lost against windows the server counted, the server's memory before and after.
"""
