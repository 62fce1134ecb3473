/* The node's own programs, on its devices (install --devices, Cilium's --devices), like Cilium's bpf_host.c:
 * from_netdev on tc ingress (traffic arriving at the node), to_netdev on tc egress (traffic leaving it).
 * Compiled in one unit after bpf_lxc.c (datapath/build.py), so both share every map. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/nodeport.h"
