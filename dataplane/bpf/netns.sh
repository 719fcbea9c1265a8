#!/usr/bin/env bash
# The offload test topology, as pods are joined: client ns -- gateway ns -- peer ns over
# veth pairs, IPv4 from 198.18.0.0/15 and IPv6 from the benchmarking range 2001:2::/48.
#
#   dataplane/bpf/netns.sh up [PREFIX]    # namespaces PREFIX-c, PREFIX-g, PREFIX-p
#   dataplane/bpf/netns.sh down [PREFIX]
#
#   client  PREFIX-c  198.18.10.2   2001:2:0:10::2   (default route via the gateway)
#   gateway PREFIX-g  198.18.10.1   2001:2:0:10::1   (to the client)
#                     198.18.20.1   2001:2:0:20::1   (to the peer)
#   peer    PREFIX-p  198.18.20.2   2001:2:0:20::2   (default route via the gateway)
#
# Senders keep checksum offload (their packets arrive CHECKSUM_PARTIAL, as between pods
# on one node); the gateway's devices compute checksums in software on the way out, so
# receivers check what actually left the gateway.
set -euo pipefail
cmd=${1:?usage: netns.sh up|down [PREFIX]}
p=${2:-tpk}
c=$p-c g=$p-g x=$p-p

down() {
  for n in "$c" "$g" "$x"; do ip netns del "$n" 2>/dev/null || true; done
}

up() {
  down
  for n in "$c" "$g" "$x"; do
    ip netns add "$n"
    ip -n "$n" link set lo up
  done
  ip link add "$p-c0" netns "$c" type veth peer name "$p-g0" netns "$g"
  ip link add "$p-p0" netns "$x" type veth peer name "$p-g1" netns "$g"
  ip -n "$c" addr add 198.18.10.2/24 dev "$p-c0"
  ip -n "$c" addr add 2001:2:0:10::2/64 dev "$p-c0" nodad
  ip -n "$g" addr add 198.18.10.1/24 dev "$p-g0"
  ip -n "$g" addr add 2001:2:0:10::1/64 dev "$p-g0" nodad
  ip -n "$g" addr add 198.18.20.1/24 dev "$p-g1"
  ip -n "$g" addr add 2001:2:0:20::1/64 dev "$p-g1" nodad
  ip -n "$x" addr add 198.18.20.2/24 dev "$p-p0"
  ip -n "$x" addr add 2001:2:0:20::2/64 dev "$p-p0" nodad
  for pair in "$c:$p-c0" "$g:$p-g0" "$g:$p-g1" "$x:$p-p0"; do
    ip -n "${pair%%:*}" link set "${pair#*:}" up
  done
  ip -n "$c" route add default via 198.18.10.1
  ip -n "$c" -6 route add default via 2001:2:0:10::1
  ip -n "$x" route add default via 198.18.20.1
  ip -n "$x" -6 route add default via 2001:2:0:20::1
  # As in a pod: the gateway namespace does not forward (new namespaces may inherit it).
  ip netns exec "$g" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
  ip netns exec "$g" ethtool -K "$p-g0" tx off >/dev/null
  ip netns exec "$g" ethtool -K "$p-g1" tx off >/dev/null
  # Receivers verify every checksum themselves rather than trust the veth.
  ip netns exec "$c" ethtool -K "$p-c0" rx off >/dev/null
  ip netns exec "$x" ethtool -K "$p-p0" rx off >/dev/null
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: netns.sh up|down [PREFIX]" >&2; exit 2 ;;
esac
