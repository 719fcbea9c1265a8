"""Allocate through a TURN server with aioice, then echo datagrams through the relay.

Exit 0 and print a JSON line on success. With --expect-error CODE, exit 0 only when the
Allocate fails with that STUN error code (e.g. 401 for an expired credential).
"""
import argparse
import asyncio
import json
import ssl
import sys

import aioice.stun
import aioice.turn


class Collector(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


def hostport(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--peer", help="echo peer host:port")
    ap.add_argument("--transport", default="udp")
    ap.add_argument("--ca", help="TURN over TLS, trusting this CA certificate file")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--expect-error", type=int)
    args = ap.parse_args()

    try:
        transport, protocol = await aioice.turn.create_turn_endpoint(
            Collector,
            server_addr=hostport(args.server),
            username=args.username,
            password=args.password,
            transport=args.transport,
            ssl=ssl.create_default_context(cafile=args.ca) if args.ca else None,
        )
    except ssl.SSLError as e:
        print(f"TLS failed: {e}", file=sys.stderr)
        return 3
    except aioice.stun.TransactionFailed as e:
        code = e.response.attributes.get("ERROR-CODE", (None, ""))[0]
        if args.expect_error and code == args.expect_error:
            print(json.dumps({"refused": code}))
            return 0
        print(f"allocation failed: {code} {e}", file=sys.stderr)
        return 1
    if args.expect_error:
        print(f"expected error {args.expect_error}, but the allocation succeeded", file=sys.stderr)
        return 1

    relayed = transport.get_extra_info("sockname")
    peer = hostport(args.peer)
    received = 0
    for i in range(args.count):
        payload = f"turnpike-{i}".encode()
        transport.sendto(payload, peer)
        data, addr = await asyncio.wait_for(protocol.queue.get(), timeout=5)
        if data != payload or addr[1] != peer[1]:
            print(f"unexpected echo {data!r} from {addr}", file=sys.stderr)
            return 1
        received += 1
    transport.close()
    print(json.dumps({"relayed": list(relayed), "echoed": received}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
