"""Two aiortc peers connected relay-only through a TURN server exchange a datachannel
message. Exit 0 on success; prints the selected candidate types."""
import argparse
import asyncio
import json
import sys

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="turn:127.0.0.1:3478?transport=udp")
    ap.add_argument("--username", required=True)
    ap.add_argument("--password", required=True)
    args = ap.parse_args()

    def config():
        return RTCConfiguration(
            iceServers=[RTCIceServer(urls=args.url, username=args.username, credential=args.password)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )

    a, b = RTCPeerConnection(config()), RTCPeerConnection(config())
    got = asyncio.get_running_loop().create_future()

    @b.on("datachannel")
    def on_channel(channel):
        @channel.on("message")
        def on_message(message):
            if not got.done():
                got.set_result(message)

    channel = a.createDataChannel("chat")

    @channel.on("open")
    def on_open():
        channel.send("hello through turnpike")

    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)

    try:
        message = await asyncio.wait_for(got, timeout=20)
    except asyncio.TimeoutError:
        print("no datachannel message within 20 s", file=sys.stderr)
        return 1
    sdp = a.localDescription.sdp
    relay_candidates = sum(1 for line in sdp.splitlines() if "typ relay" in line)
    host_candidates = sum(1 for line in sdp.splitlines() if "typ host" in line)
    await a.close()
    await b.close()
    if message != "hello through turnpike" or relay_candidates == 0 or host_candidates:
        print(f"message={message!r} relay={relay_candidates} host={host_candidates}", file=sys.stderr)
        return 1
    print(json.dumps({"message": message, "relayCandidates": relay_candidates}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
