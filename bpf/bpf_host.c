/* The node's own programs, on its devices (install --devices, Cilium's --devices), like Cilium's bpf_host.c:
 * from_netdev on tc ingress (traffic arriving at the node), to_netdev on tc egress (traffic leaving it).
 * NodePort first (lib/nodeport.h); then, with the host firewall on (install --host-firewall: the device is the
 * host endpoint's in `endpoints`), the host's policy on packets to and from the node's own addresses, with the
 * endpoints' body (lib/enforce.h: the same policy map, deny precedence, conntrack and events).
 * Compiled in one unit after bpf_lxc.c (datapath/build.py), so both share every map. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/enforce.h"
#include "lib/nodeport.h"

int from_netdev(struct __sk_buff *skb)
{
	/* a packet to a NodePort leaves with a backend as destination: no longer the host's (enforce.h) */
	int ret = nodeport_from_netdev(skb);

	if (ret != TC_ACT_OK)
		return ret;
	return handle(skb, CTL_DIR_INGRESS, CTL_OBS_FROM_NETWORK, 1);
}

int to_netdev(struct __sk_buff *skb)
{
	/* the host's egress before the NodePort reply gets the node's address as its source */
	if (skb->mark != LB_REJECT_MARK) {
		int ret = handle(skb, CTL_DIR_EGRESS, CTL_OBS_TO_NETWORK, 1);
		if (ret != TC_ACT_OK)
			return ret;
	}
	return nodeport_to_netdev(skb);
}
