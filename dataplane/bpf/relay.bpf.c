// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
//
// Turnpike's kernel relay: forwards the ChannelData of established channel bindings of
// UDP clients without waking userspace (TC ingress, or XDP).
//
//   client -> listener   ChannelData(ch, payload)  ==>  relay -> peer    payload
//   peer   -> relay      payload                   ==>  listener -> client  ChannelData
//
// Userspace (dataplane/src/offload/) owns the truth: it writes an entry when a channel is
// bound and removes it when the channel, its permission or its allocation ends. Every
// entry carries its deadline, so the kernel stops at the exact expiry even before
// userspace removes the entry. Anything this program does not fully understand goes up
// the stack unchanged: it never drops a packet.
//
// Build: dataplane/bpf/build.sh (Debian clang + libbpf-dev; the object is committed and a
// test rebuilds it and compares).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#define CHANNEL_HEADER 4
#define RELAY_TTL 64
// The UDP payload most one packet may carry after a header is added.
#define MAX_UDP_PAYLOAD (65535 - 8 - 40 - CHANNEL_HEADER)

// ---------------------------------------------------------------------------- maps
// Layouts are mirrored by #[repr(C)] types in dataplane/src/offload/maps.rs, whose test
// checks sizes and offsets. Addresses are 16 bytes: an IPv4 address in the first 4.

// client -> peer: which binding a ChannelData from a client belongs to.
struct client_key {
	__u8 family; // 4 or 6
	__u8 pad;
	__u16 channel;      // host order
	__be16 listen_port; // the listener port the client sent to
	__be16 client_port;
	__u8 client_ip[16];
};

struct to_peer {
	__u8 relay_ip[16]; // the relay socket's source address towards the peer
	__u8 peer_ip[16];
	__be16 relay_port;
	__be16 peer_port;
	__u32 stats_slot;
	__u32 out_ifindex; // the device userspace would send from (the route's)
	__u32 pad;
	__u64 expires_ns;  // CLOCK_MONOTONIC (bpf_ktime_get_ns)
};

// peer -> client: which binding a datagram to a relay port belongs to.
struct peer_key {
	__u8 family;
	__u8 pad;
	__be16 relay_port;
	__be16 peer_port;
	__u16 pad2;
	__u8 peer_ip[16];
};

struct to_client {
	__u8 listen_ip[16]; // the listener's source address towards the client
	__u8 client_ip[16];
	__be16 listen_port;
	__be16 client_port;
	__u16 channel; // host order
	__u16 pad;
	__u32 stats_slot;
	__u32 out_ifindex;
	__u64 expires_ns;
};

// Per binding, per CPU: what the kernel relayed (payload bytes, as userspace counts them).
struct binding_stats {
	__u64 to_peer_packets;
	__u64 to_peer_bytes;
	__u64 to_client_packets;
	__u64 to_client_bytes;
};

// Why packets went up the stack instead (index of the per-CPU `events` array).
enum event {
	EV_TO_PEER = 0,      // relayed client -> peer
	EV_TO_CLIENT = 1,    // relayed peer -> client
	EV_EXPIRED = 2,      // a binding past its deadline: userspace decides
	EV_NO_ROUTE = 3,     // the FIB had no forwarding answer (local peer, unreachable)
	EV_NOT_EXACT = 4,    // ChannelData with padding or a length that does not match
	EV_ADJUST_FAILED = 5,// the packet could not be resized
	EV_PARTIAL_CHECKSUM = 6, // the sender's checksum is not finished yet (see below)
	EV_MAX = 8,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct client_key);
	__type(value, struct to_peer);
} turnpike_to_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct to_client);
} turnpike_to_client SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct binding_stats);
} turnpike_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_MAX);
	__type(key, __u32);
	__type(value, __u64);
} turnpike_events SEC(".maps");

static __always_inline void count_event(__u32 ev)
{
	__u64 *n = bpf_map_lookup_elem(&turnpike_events, &ev);
	if (n)
		*n += 1;
}

// ---------------------------------------------------------------------------- checksums
// Incremental updates (RFC 1624) built with bpf_csum_diff, so one code path serves TC
// and XDP. Addresses, ports and lengths all sit on 16-bit boundaries of the sums.

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

// A checksum field after the data it covers changed by `diff`: the sum of the new 16-bit
// words and the complements of the old ones.
static __always_inline __u16 csum_apply(__u16 check, __u64 diff)
{
	return ~csum_fold((__u64)(__u16)~check + diff);
}

// ---------------------------------------------------------------------------- parsing

struct packet {
	void *data;
	void *data_end;
	__u8 family;
	__u32 l3;       // offset of the IP header
	__u32 l4;       // offset of the UDP header
};

struct addrs {
	__u32 src[4];
	__u32 dst[4];
};

// The flow a packet is: its addresses and UDP header, or 0 when this program leaves it.
static __always_inline int parse(struct packet *p, struct addrs *a, struct udphdr *udp)
{
	struct ethhdr *eth = p->data;
	if ((void *)(eth + 1) > p->data_end)
		return 0;
	p->l3 = sizeof(*eth);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = p->data + p->l3;
		if ((void *)(ip + 1) > p->data_end)
			return 0;
		// No options, no fragments (MF set or an offset), UDP only.
		if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || ip->protocol != IPPROTO_UDP)
			return 0;
		p->family = 4;
		p->l4 = p->l3 + sizeof(*ip);
		a->src[0] = ip->saddr;
		a->dst[0] = ip->daddr;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = p->data + p->l3;
		if ((void *)(ip6 + 1) > p->data_end)
			return 0;
		// Extension headers (fragments among them) go up the stack.
		if (ip6->nexthdr != IPPROTO_UDP)
			return 0;
		p->family = 6;
		p->l4 = p->l3 + sizeof(*ip6);
		__builtin_memcpy(a->src, &ip6->saddr, 16);
		__builtin_memcpy(a->dst, &ip6->daddr, 16);
	} else {
		return 0;
	}
	struct udphdr *u = p->data + p->l4;
	if ((void *)(u + 1) > p->data_end)
		return 0;
	*udp = *u;
	return 1;
}

// ---------------------------------------------------------------------------- forwarding

// Where the program runs: the same code serves both hooks.
enum hook { HOOK_TC, HOOK_XDP };

struct route {
	__u32 ifindex;
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
	enum { VIA_MAC, VIA_NEXTHOP, VIA_STACK } via;
	__u32 nexthop[4];
};

// How the relayed packet leaves, decided before anything is rewritten: with the MACs the
// FIB found (VIA_MAC); through the neighbour subsystem to a known next hop when the
// neighbour is not resolved yet (VIA_NEXTHOP, TC only); or, where forwarding is off on the
// device (the FIB helper then refuses; pods usually have it off), by the kernel's own
// output route and neighbour lookup on the device userspace named (VIA_STACK, TC only).
static __always_inline int lookup_route(void *ctx, __u8 family, const __u32 *src, const __u32 *dst,
					__be16 sport, __be16 dport, __u16 tot_len, __u32 ifindex,
					enum hook hook, struct route *r)
{
	struct bpf_fib_lookup fib = {};
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = sport;
	fib.dport = dport;
	fib.tot_len = tot_len;
	fib.ifindex = ifindex;
	if (family == 4) {
		fib.family = AF_INET;
		fib.ipv4_src = src[0];
		fib.ipv4_dst = dst[0];
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, src, 16);
		__builtin_memcpy(fib.ipv6_dst, dst, 16);
	}
	// Egress view: the route a packet from the relay's own address takes.
	long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		r->via = VIA_MAC;
	} else if (rc == BPF_FIB_LKUP_RET_NO_NEIGH && hook == HOOK_TC) {
		r->via = VIA_NEXTHOP;
	} else if (rc == BPF_FIB_LKUP_RET_FWD_DISABLED && hook == HOOK_TC) {
		// The stack route may not fit the grown packet: ask the device's MTU first.
		__u32 mtu = 0;
		if (bpf_check_mtu(ctx, ifindex, &mtu, tot_len - ((struct __sk_buff *)ctx)->len, 0))
			return 0;
		r->via = VIA_STACK;
		r->ifindex = ifindex;
		return 1;
	} else {
		return 0;
	}
	r->ifindex = fib.ifindex;
	// The FIB leaves the next hop (the gateway, or the destination itself) in ipv*_dst.
	if (family == 4)
		r->nexthop[0] = fib.ipv4_dst;
	else
		__builtin_memcpy(r->nexthop, fib.ipv6_dst, 16);
	__builtin_memcpy(r->smac, fib.smac, ETH_ALEN);
	__builtin_memcpy(r->dmac, fib.dmac, ETH_ALEN);
	return 1;
}

static __always_inline int expired(__u64 expires_ns)
{
	return bpf_ktime_get_ns() >= expires_ns;
}


static __always_inline __u64 sum_words(const __u32 *w, int n)
{
	__u64 sum = 0;
#pragma unroll
	for (int i = 0; i < 4; i++)
		if (i < n)
			sum += w[i];
	return sum;
}

// A sender's kernel leaves a UDP checksum for the device to finish (CHECKSUM_PARTIAL,
// common between pods on one node): its field then holds only the pseudo-header sum, and
// the kernel will complete it at an offset this program cannot move. Such packets go up
// the stack. A finished checksum equals that value once in 65,536 packets; those go up too.
static __always_inline int checksum_unfinished(const struct packet *p, const struct addrs *a,
					       const struct udphdr *udp)
{
	int n = p->family == 4 ? 1 : 4;
	__u64 sum = sum_words(a->src, n) + sum_words(a->dst, n);
	sum += bpf_htons(IPPROTO_UDP);
	sum += udp->len;
	return udp->check == csum_fold(sum);
}

// The UDP checksum of the relayed packet, from the old one: addresses (pseudo-header),
// ports, the length (in the pseudo-header and the UDP header) and the ChannelData header
// word that was removed or added. IPv4 datagrams sent without a checksum keep none.
static __always_inline __u16 udp_checksum(const struct packet *p, const struct addrs *old,
					  const struct addrs *new, const struct udphdr *old_udp,
					  const struct udphdr *new_udp, __u32 channel_word, int adding)
{
	if (old_udp->check == 0 && p->family == 4)
		return 0;
	int n = p->family == 4 ? 1 : 4;
	__u64 diff = 0;
	diff += sum_words(new->src, n) + sum_words(new->dst, n);
	diff += (__u64)(__u32)~old->src[0] + (__u32)~old->dst[0];
	if (n == 4) {
		diff += (__u64)(__u32)~old->src[1] + (__u32)~old->src[2] + (__u32)~old->src[3];
		diff += (__u64)(__u32)~old->dst[1] + (__u32)~old->dst[2] + (__u32)~old->dst[3];
	}
	// Ports and length, the length twice (pseudo-header and header).
	diff += new_udp->source + new_udp->dest + 2 * (__u64)new_udp->len;
	diff += (__u16)~old_udp->source + (__u16)~old_udp->dest + 2 * (__u64)(__u16)~old_udp->len;
	if (adding)
		diff += (channel_word >> 16) + (channel_word & 0xffff);
	else
		diff += (__u16)~(channel_word >> 16) + (__u16)~(channel_word & 0xffff);
	__u16 check = csum_apply(old_udp->check, diff);
	return check == 0 ? 0xffff : check; // RFC 768: a computed 0 is sent as all ones
}

// ---------------------------------------------------------------------------- the relay

struct relayed {
	struct addrs addrs;
	__be16 sport;
	__be16 dport;
	__u32 channel_word; // the ChannelData header as it is on the wire (raw)
	__u32 stats_slot;
	__u32 out_ifindex;
	int adding;         // 1: peer -> client (+4 bytes), 0: client -> peer (-4 bytes)
};

static __always_inline void refresh(void *ctx, struct packet *p, enum hook hook)
{
	if (hook == HOOK_TC) {
		struct __sk_buff *skb = ctx;
		p->data = (void *)(long)skb->data;
		p->data_end = (void *)(long)skb->data_end;
	} else {
		struct xdp_md *xdp = ctx;
		p->data = (void *)(long)xdp->data;
		p->data_end = (void *)(long)xdp->data_end;
	}
}

// Copies the first `len` bytes (the Ethernet and IP headers) 4 bytes towards the end
// (to_end) or towards the start; overlapping, so in the safe order.
static __always_inline int shift_headers(struct packet *p, int len, int to_end)
{
	__u8 *d = p->data;
	if ((void *)(d + len + CHANNEL_HEADER) > p->data_end)
		return 0;
	if (to_end) {
#pragma unroll
		for (int i = len - 1; i >= 0; i--)
			d[i + CHANNEL_HEADER] = d[i];
	} else {
#pragma unroll
		for (int i = 0; i < len; i++)
			d[i] = d[i + CHANNEL_HEADER];
	}
	return 1;
}

// Moves the Ethernet and IP headers by 4 bytes so the UDP header can follow them with the
// ChannelData header removed (shrink) or inserted (grow). After this the bytes at l4 are
// stale and the caller writes the whole UDP header (and the ChannelData header).
static __always_inline int resize(void *ctx, struct packet *p, enum hook hook, int grow)
{
	if (hook == HOOK_TC) {
		if (bpf_skb_adjust_room(ctx, grow ? CHANNEL_HEADER : -CHANNEL_HEADER,
					BPF_ADJ_ROOM_NET, 0))
			return 0;
		refresh(ctx, p, hook);
		return 1;
	}
	// XDP: the headers move by hand (34 or 54 bytes), before the head when shrinking and
	// after it when growing, so the bytes copied are always inside the packet.
	if (!grow) {
		if (!(p->family == 4 ? shift_headers(p, 14 + 20, 1) : shift_headers(p, 14 + 40, 1)))
			return 0;
		if (bpf_xdp_adjust_head(ctx, CHANNEL_HEADER))
			return 0;
		refresh(ctx, p, hook);
		return 1;
	}
	if (bpf_xdp_adjust_head(ctx, -CHANNEL_HEADER))
		return 0;
	refresh(ctx, p, hook);
	return p->family == 4 ? shift_headers(p, 14 + 20, 0) : shift_headers(p, 14 + 40, 0);
}

// Writes the relayed packet's headers (the packet has been resized) and sends it on.
static __always_inline int emit(void *ctx, struct packet *p, enum hook hook, const struct addrs *old,
				const struct udphdr *old_udp, const struct relayed *r,
				const struct route *rt)
{
	__u16 old_len = bpf_ntohs(old_udp->len);
	__u16 new_len = r->adding ? old_len + CHANNEL_HEADER : old_len - CHANNEL_HEADER;
	struct udphdr nu = {.source = r->sport, .dest = r->dport, .len = bpf_htons(new_len)};
	nu.check = udp_checksum(p, old, &r->addrs, old_udp, &nu, r->channel_word, r->adding);

	struct ethhdr *eth = p->data;
	if ((void *)(eth + 1) > p->data_end)
		return TC_ACT_OK;
	if (rt->via == VIA_MAC) {
		__builtin_memcpy(eth->h_source, rt->smac, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, rt->dmac, ETH_ALEN);
	}
	if (p->family == 4) {
		struct iphdr *ip = p->data + p->l3;
		if ((void *)(ip + 1) > p->data_end)
			return 0;
		__u16 new_tot = bpf_ntohs(ip->tot_len) + (r->adding ? CHANNEL_HEADER : -CHANNEL_HEADER);
		__u64 diff = (__u32)~ip->saddr + (__u64)(__u32)~ip->daddr + r->addrs.src[0] +
			     r->addrs.dst[0];
		diff += (__u16)~ip->tot_len + bpf_htons(new_tot);
		__u16 *ttl_word = (__u16 *)&ip->ttl;
		diff += (__u16)~*ttl_word;
		ip->ttl = RELAY_TTL;
		diff += *ttl_word;
		ip->check = csum_apply(ip->check, diff);
		ip->saddr = r->addrs.src[0];
		ip->daddr = r->addrs.dst[0];
		ip->tot_len = bpf_htons(new_tot);
	} else {
		struct ipv6hdr *ip6 = p->data + p->l3;
		if ((void *)(ip6 + 1) > p->data_end)
			return 0;
		__builtin_memcpy(&ip6->saddr, r->addrs.src, 16);
		__builtin_memcpy(&ip6->daddr, r->addrs.dst, 16);
		ip6->payload_len = bpf_htons(new_len);
		ip6->hop_limit = RELAY_TTL;
	}
	struct udphdr *udp = p->data + p->l4;
	if ((void *)(udp + 1) > p->data_end)
		return 0;
	*udp = nu;
	if (r->adding) {
		__u32 *ch = (void *)(udp + 1);
		if ((void *)(ch + 1) > p->data_end)
			return 0;
		*ch = r->channel_word;
	}
	return 1;
}

static __always_inline void count_binding(__u32 slot, int to_client, __u64 bytes)
{
	struct binding_stats *s = bpf_map_lookup_elem(&turnpike_stats, &slot);
	if (!s)
		return;
	if (to_client) {
		s->to_client_packets += 1;
		s->to_client_bytes += bytes;
	} else {
		s->to_peer_packets += 1;
		s->to_peer_bytes += bytes;
	}
}

// One packet: 1 when it was relayed (the caller returns the redirect verdict), 0 when it
// goes up the stack untouched.
static __always_inline int relay(void *ctx, enum hook hook, __u32 len, long *verdict)
{
	struct packet p = {};
	struct addrs a = {};
	struct udphdr udp;
	refresh(ctx, &p, hook);
	if (!parse(&p, &a, &udp))
		return 0;
	__u16 udp_len = bpf_ntohs(udp.len);
	// One whole datagram, nothing after it (no Ethernet padding, not a GSO train).
	if (udp_len < 8 || udp_len != len - p.l4)
		return 0;

	struct relayed r = {};
	__u64 payload_bytes;
	__u8 family = p.family;
	__u32 *ch = p.data + p.l4 + 8;
	int from_client = 0;
	if (udp_len >= 8 + CHANNEL_HEADER && (void *)(ch + 1) <= p.data_end) {
		__u32 word = *ch;
		__u16 number = bpf_ntohs((__u16)word);
		if (number >= 0x4000 && number <= 0x4fff) {
			struct client_key k = {.family = family, .channel = number, .listen_port = udp.dest,
					       .client_port = udp.source};
			__builtin_memcpy(k.client_ip, a.src, 16); // IPv4: the rest is zero
			struct to_peer *v = bpf_map_lookup_elem(&turnpike_to_peer, &k);
			if (v) {
				from_client = 1;
				if (expired(v->expires_ns)) {
					count_event(EV_EXPIRED);
					return 0;
				}
				if (bpf_ntohs((__u16)(word >> 16)) != udp_len - 8 - CHANNEL_HEADER) {
					count_event(EV_NOT_EXACT);
					return 0;
				}
				__builtin_memcpy(r.addrs.src, v->relay_ip, 16);
				__builtin_memcpy(r.addrs.dst, v->peer_ip, 16);
				r.sport = v->relay_port;
				r.dport = v->peer_port;
				r.channel_word = word;
				r.stats_slot = v->stats_slot;
				r.out_ifindex = v->out_ifindex;
				r.adding = 0;
				payload_bytes = udp_len - 8 - CHANNEL_HEADER;
			}
		}
	}
	if (!from_client) {
		struct peer_key k = {.family = family, .relay_port = udp.dest, .peer_port = udp.source};
		__builtin_memcpy(k.peer_ip, a.src, 16);
		struct to_client *v = bpf_map_lookup_elem(&turnpike_to_client, &k);
		if (!v)
			return 0;
		if (expired(v->expires_ns)) {
			count_event(EV_EXPIRED);
			return 0;
		}
		if (udp_len - 8 > MAX_UDP_PAYLOAD)
			return 0;
		__builtin_memcpy(r.addrs.src, v->listen_ip, 16);
		__builtin_memcpy(r.addrs.dst, v->client_ip, 16);
		r.sport = v->listen_port;
		r.dport = v->client_port;
		r.channel_word = (__u32)bpf_htons(v->channel) | ((__u32)bpf_htons(udp_len - 8) << 16);
		r.stats_slot = v->stats_slot;
		r.out_ifindex = v->out_ifindex;
		r.adding = 1;
		payload_bytes = udp_len - 8;
	}
	if (checksum_unfinished(&p, &a, &udp)) {
		count_event(EV_PARTIAL_CHECKSUM);
		return 0;
	}
	__u16 new_ip_len = len - p.l3 + (r.adding ? CHANNEL_HEADER : -CHANNEL_HEADER);
	struct route rt = {};
	if (!lookup_route(ctx, family, r.addrs.src, r.addrs.dst, r.sport, r.dport, new_ip_len,
			  r.out_ifindex, hook, &rt)) {
		count_event(EV_NO_ROUTE);
		return 0;
	}
	struct addrs old = a;
	if (!resize(ctx, &p, hook, r.adding)) {
		count_event(EV_ADJUST_FAILED);
		return 0;
	}
	// From here the packet is changed: failing now would pass up a broken packet, which
	// the bounds checks above make impossible; count it should the verifier's view and
	// ours ever differ.
	if (!emit(ctx, &p, hook, &old, &udp, &r, &rt)) {
		count_event(EV_ADJUST_FAILED);
		*verdict = hook == HOOK_TC ? TC_ACT_SHOT : XDP_DROP;
		return 1;
	}
	count_binding(r.stats_slot, r.adding, payload_bytes);
	count_event(r.adding ? EV_TO_CLIENT : EV_TO_PEER);
	if (hook == HOOK_TC) {
		if (rt.via == VIA_MAC) {
			*verdict = bpf_redirect(rt.ifindex, 0);
		} else if (rt.via == VIA_NEXTHOP) {
			struct bpf_redir_neigh nh = {};
			if (family == 4) {
				nh.nh_family = AF_INET;
				nh.ipv4_nh = rt.nexthop[0];
			} else {
				nh.nh_family = AF_INET6;
				__builtin_memcpy(nh.ipv6_nh, rt.nexthop, 16);
			}
			*verdict = bpf_redirect_neigh(rt.ifindex, &nh, sizeof(nh), 0);
		} else {
			*verdict = bpf_redirect_neigh(rt.ifindex, 0, 0, 0);
		}
		// The checksum this program wrote has not been verified by anyone: receivers
		// behind a veth must check it rather than trust the first hop's verdict.
		bpf_csum_level(ctx, BPF_CSUM_LEVEL_RESET);
	} else {
		*verdict = bpf_redirect(rt.ifindex, 0);
	}
	return 1;
}

SEC("classifier")
int turnpike_tc(struct __sk_buff *skb)
{
	// GSO trains are many datagrams in one buffer: they go up and are split there.
	if (skb->gso_segs > 1)
		return TC_ACT_OK;
	// The first bytes up to the ChannelData header must be in the linear part.
	if ((void *)(long)skb->data + 14 + 40 + 8 + CHANNEL_HEADER > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, 14 + 40 + 8 + CHANNEL_HEADER < skb->len
					   ? 14 + 40 + 8 + CHANNEL_HEADER
					   : skb->len);
	long verdict = TC_ACT_OK;
	if (!relay(skb, HOOK_TC, skb->len, &verdict))
		return TC_ACT_OK;
	return (int)verdict;
}

SEC("xdp")
int turnpike_xdp(struct xdp_md *ctx)
{
	long verdict = XDP_PASS;
	__u32 len = (__u32)(ctx->data_end - ctx->data);
	if (!relay(ctx, HOOK_XDP, len, &verdict))
		return XDP_PASS;
	return (int)verdict;
}

// GPL-2.0 OR Apache-2.0: "GPL" to the kernel, whose FIB and redirect helpers need it.
char LICENSE[] SEC("license") = "GPL";
