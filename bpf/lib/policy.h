/* Policy lookup: two LPM lookups (peer identity, any identity), each returning its most specific
 * (proto, port prefix) entry. User space marks every entry covered by a less specific deny as deny, so the
 * most specific match is a deny whenever any deny matches; deny in either lookup wins. */
#ifndef CTL_POLICY_H
#define CTL_POLICY_H

#include "maps.h"

struct verdict {
	__u8 allowed;
	__u8 deny_rule;    /* denied by an explicit deny entry (181) rather than by default (133) */
	__u8 match_type;
	__u32 cookie;
	__u16 proxy_port;  /* host byte order, 0: no L7 redirect */
};

static __always_inline void policy_lookup(struct verdict *v, __u8 slot, __u8 dir, __u16 ep_id,
					  __u32 peer_id, __u8 proto, __u16 port)
{
	struct policy_key k = {};
	struct policy_val *spec, *any;

	k.prefixlen = POLICY_FULL_BITS;
	k.slot = slot;
	k.dir = dir;
	k.ep_id = ep_id;
	k.identity = peer_id;
	k.proto = proto;
	k.dport = ctl_htons(port);
	spec = policy.lookup(&k);
	k.identity = 0;
	any = policy.lookup(&k);

	v->allowed = 0;
	v->deny_rule = 0;
	v->match_type = CTL_MATCH_NONE;
	v->cookie = 0;
	v->proxy_port = 0;
	if (spec && spec->deny) {
		v->deny_rule = 1;
		v->match_type = spec->match_type;
		v->cookie = spec->cookie;
		return;
	}
	if (any && any->deny) {
		v->deny_rule = 1;
		v->match_type = any->match_type;
		v->cookie = any->cookie;
		return;
	}
	/* Cilium's order: L3+L4, L3-only (both identity-specific), then L4-only, all */
	if (spec) {
		v->allowed = 1;
		v->match_type = spec->match_type;
		v->cookie = spec->cookie;
		v->proxy_port = ctl_ntohs(spec->proxy_port);
	} else if (any) {
		v->allowed = 1;
		v->match_type = any->match_type;
		v->cookie = any->cookie;
		v->proxy_port = ctl_ntohs(any->proxy_port);
	}
}

static __always_inline __u32 ipcache_identity(__u8 slot, __u32 ip)
{
	struct ipcache_key k = {};
	struct ipcache_val *v;

	k.prefixlen = 64;
	k.slot = slot;
	k.ip = ip;
	v = ipcache.lookup(&k);
	return v ? v->identity : CTL_IDENTITY_WORLD;
}

#endif
