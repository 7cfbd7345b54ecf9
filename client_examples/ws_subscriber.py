"""Print live gesture decisions from a running RoHDE server.

    python client_examples/ws_subscriber.py                      # ws://127.0.0.1:8000/ws, every stream
    python client_examples/ws_subscriber.py --url ws://host:8000/ws --stream RoHDE-Sim-0 --count 100

Needs only the `websockets` package. Each message is JSON: `kind` "prediction" (one decision per
window) or "status" (stream lost/recovered/refused, model changed); see GET /schema/messages.
"""

from __future__ import annotations

import argparse
import json
import sys

from websockets.sync.client import connect


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws", help="server WebSocket URL")
    parser.add_argument("--stream", default=None, help="only this stream id")
    parser.add_argument("--count", type=int, default=0, help="stop after this many decisions (0 = never)")
    args = parser.parse_args()
    url = args.url + (f"?stream={args.stream}" if args.stream else "")
    decisions = 0
    with connect(url) as ws:
        for text in ws:
            message = json.loads(text)
            if message["kind"] == "status":
                sys.stdout.write(f"[{message['event']}] {message.get('stream_id') or ''} {message['detail']}\n")
                continue
            if message["kind"] == "cue":  # a calibration cue of `rohde record`
                sys.stdout.write(f"[cue {message['index'] + 1}/{message['total']}] {message['phase']} "
                                 f"{message['label']}\n")
                continue
            flag = f" REJECTED ({message['reject_reason']})" if message["rejected"] else ""
            sys.stdout.write(
                f"{message['stream_id']} #{message['seq']:6d} {message['gesture']:<18} "
                f"conf {message['confidence']:.2f} latency {message['latency_ms']:.1f} ms "
                f"bad channels {len(message['bad_channels'])}{flag}\n"
            )
            decisions += 1
            if args.count and decisions >= args.count:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
