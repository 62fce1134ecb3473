/* Endpoint programs, attached as tc clsact filters on the host side of each endpoint's veth (like Cilium's
 * bpf_lxc.c): from_container on host-side ingress (traffic leaving the pod: egress policy), to_container on
 * host-side egress (traffic entering the pod: ingress policy). Compiled once; per-endpoint facts come from maps.
 * The body (services, conntrack, policy, events) is lib/enforce.h, shared with the host's bpf_host.c. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/enforce.h"

int from_container(struct __sk_buff *skb)
{
	return handle(skb, CTL_DIR_EGRESS, CTL_OBS_FROM_ENDPOINT, 0);
}

int to_container(struct __sk_buff *skb)
{
	return handle(skb, CTL_DIR_INGRESS, CTL_OBS_TO_ENDPOINT, 0);
}
