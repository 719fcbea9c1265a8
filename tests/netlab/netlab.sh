#!/usr/bin/env bash
# The restrictive-network test bed: a client behind a NAT router with an egress profile,
# the Gateway on the "internet" side, and a media server reachable only from the Gateway.
# IPv4 from 198.18.0.0/15, IPv6 from 2001:2::/48; nothing outside the namespaces it makes.
#
#   tests/netlab/netlab.sh up PREFIX [cone|symmetric]   # namespaces PREFIX-{c,r,g,m}
#   tests/netlab/netlab.sh profile PREFIX PROFILE       # the router's egress rules
#   tests/netlab/netlab.sh nat PREFIX cone|symmetric    # the router's NAT
#   tests/netlab/netlab.sh down PREFIX
#
#   client  PREFIX-c  198.18.121.2     2001:2:0:121::2   default route via the router
#   router  PREFIX-r  198.18.121.1     2001:2:0:121::1   (LAN side; HTTP proxy :3128)
#                     198.18.100.254   2001:2:0:100::fe  (internet side; NAT to this)
#   gateway PREFIX-g  198.18.100.1     2001:2:0:100::1   Turnpike (TURN, /ice-config)
#                     198.18.100.2     2001:2:0:100::2   the web/app server
#                     198.18.110.1     2001:2:0:110::1   towards the media server
#   media   PREFIX-m  198.18.110.2     2001:2:0:110::2   default route via the gateway
#
# In the client and router namespaces turn.netlab.test and app.netlab.test name the
# Gateway and the web server (/etc/netns/NS/hosts, which `ip netns exec` mounts).
#
# The gateway namespace does not forward (as a pod does not): the media server is reached
# only through the TURN relay. Profiles, applied to what the client sends out:
#   open             everything
#   udp-blocked      no UDP
#   tcp-443-only     only TCP to port 443
#   tls-443-only     only TCP to port 443 whose first payload is a TLS ClientHello
#   http-proxy-only  nothing direct; only the router's HTTP proxy (CONNECT to 443)
#   ipv6-only        no IPv4 at all
#   web-only         only HTTPS to the web server: no TURN transport passes
set -euo pipefail
cmd=${1:?usage: netlab.sh up|profile|nat|down PREFIX ...}
p=${2:?PREFIX}
c=$p-c r=$p-r g=$p-g m=$p-m

down() {
  for n in "$c" "$r" "$g" "$m"; do
    ip netns del "$n" 2>/dev/null || true
    rm -rf "/etc/netns/$n"
  done
}

addr() { # NS DEV V4/LEN V6/LEN
  ip -n "$1" addr add "$3" dev "$2"
  ip -n "$1" addr add "$4" dev "$2" nodad
}

up() {
  local nat=${1:-cone}
  down
  for n in "$c" "$r" "$g" "$m"; do
    ip netns add "$n"
    ip -n "$n" link set lo up
  done
  ip link add "$p-c0" netns "$c" type veth peer name "$p-r0" netns "$r"
  ip link add "$p-r1" netns "$r" type veth peer name "$p-g0" netns "$g"
  ip link add "$p-g1" netns "$g" type veth peer name "$p-m0" netns "$m"
  addr "$c" "$p-c0" 198.18.121.2/24 2001:2:0:121::2/64
  addr "$r" "$p-r0" 198.18.121.1/24 2001:2:0:121::1/64
  addr "$r" "$p-r1" 198.18.100.254/24 2001:2:0:100::fe/64
  addr "$g" "$p-g0" 198.18.100.1/24 2001:2:0:100::1/64
  addr "$g" "$p-g0" 198.18.100.2/24 2001:2:0:100::2/64
  addr "$g" "$p-g1" 198.18.110.1/24 2001:2:0:110::1/64
  addr "$m" "$p-m0" 198.18.110.2/24 2001:2:0:110::2/64
  for pair in "$c:$p-c0" "$r:$p-r0" "$r:$p-r1" "$g:$p-g0" "$g:$p-g1" "$m:$p-m0"; do
    ip -n "${pair%%:*}" link set "${pair#*:}" up
  done
  ip -n "$c" route add default via 198.18.121.1
  ip -n "$c" -6 route add default via 2001:2:0:121::1
  ip -n "$m" route add default via 198.18.110.1
  ip -n "$m" -6 route add default via 2001:2:0:110::1
  ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  ip netns exec "$g" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
  # Names the client and the router's proxy resolve (`ip netns exec` mounts this file
  # over /etc/hosts): the Gateway's TLS name and the web server.
  for n in "$c" "$r"; do
    mkdir -p "/etc/netns/$n"
    printf '127.0.0.1 localhost\n::1 localhost\n%s\n' \
      "198.18.100.1 turn.netlab.test
198.18.100.2 app.netlab.test
2001:2:0:100::1 turn6.netlab.test
2001:2:0:100::2 app6.netlab.test" > "/etc/netns/$n/hosts"
    # No DNS server out there: a lookup past the hosts file fails at once instead of
    # waiting out the host's resolver.
    echo "nameserver 127.0.0.1" > "/etc/netns/$n/resolv.conf"
  done
  # Senders compute their checksums (as packets from another machine arrive).
  for pair in "$c:$p-c0" "$m:$p-m0"; do
    ip netns exec "${pair%%:*}" ethtool -K "${pair#*:}" tx off >/dev/null
  done
  nat "$nat"
  profile open
}

# NAT on the way out: a home router keeps the source port when it can ("cone"); a
# symmetric NAT picks a random port for every new mapping.
nat() {
  local how=""
  case "${1:?cone or symmetric}" in
    cone) ;;
    symmetric) how="fully-random" ;;
    *) echo "nat: cone or symmetric" >&2; exit 2 ;;
  esac
  ip netns exec "$r" nft -f - <<NFT
table inet netlab_nat
delete table inet netlab_nat
table inet netlab_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "$p-r1" masquerade $how
  }
}
NFT
  # Mappings made under the old rule would keep their ports.
  ip netns exec "$r" conntrack -F >/dev/null 2>&1 || true
}

profile() {
  local name=${1:?profile}
  local rules
  case "$name" in
    open) rules="accept" ;;
    udp-blocked) rules="meta l4proto udp drop
      accept" ;;
    tcp-443-only) rules="tcp dport 443 accept
      meta l4proto tcp reject with tcp reset
      drop" ;;
    # The first payload of every connection must be a TLS record (0x16) holding a
    # ClientHello (handshake type 1, the 6th byte); after that the connection is trusted.
    # Packets without payload (the handshake, bare ACKs) do not reach a byte and fall
    # through to the last accept.
    tls-443-only) rules="tcp dport 443 ct mark 0x1 accept
      tcp dport 443 @ih,0,8 != 0x16 reject with tcp reset
      tcp dport 443 @ih,40,8 != 0x01 reject with tcp reset
      tcp dport 443 @ih,0,8 0x16 ct mark set 0x1 accept
      tcp dport 443 accept
      meta l4proto tcp reject with tcp reset
      drop" ;;
    http-proxy-only) rules="meta l4proto tcp reject with tcp reset
      drop" ;;
    ipv6-only) rules="meta nfproto ipv4 drop
      accept" ;;
    # Only the web server: TURN cannot pass at all.
    web-only) rules="ip daddr 198.18.100.2 tcp dport 443 accept
      meta l4proto tcp reject with tcp reset
      drop" ;;
    *) echo "unknown profile $name" >&2; exit 2 ;;
  esac
  ip netns exec "$r" nft -f - <<NFT
table inet netlab_filter
delete table inet netlab_filter
table inet netlab_filter {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$p-r0" jump egress
  }
  chain egress {
    $rules
  }
}
NFT
}

case "$cmd" in
  up) up "${3:-cone}" ;;
  profile) profile "${3:-}" ;;
  nat) nat "${3:-}" ;;
  down) down ;;
  *) echo "usage: netlab.sh up|profile|nat|down PREFIX ..." >&2; exit 2 ;;
esac
