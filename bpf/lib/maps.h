/* The datapath's maps. All pinned by the loader under the bpffs directory with these names. */
#ifndef CTL_MAPS_H
#define CTL_MAPS_H

#include "common.h"

#define CTL_MAX_ENDPOINTS 65536
#define CTL_IPCACHE_SIZE  262144
#define CTL_POLICY_SIZE   262144
#define CTL_CT_SIZE       131072

BPF_HASH(endpoints, __u32, struct ep_info, CTL_MAX_ENDPOINTS);
BPF_ARRAY(state, struct dp_state, 1);
BPF_ARRAY(monitor_config, struct monitor_config, 1);
BPF_HASH(epcfg, struct epcfg_key, struct epcfg_val, 2 * CTL_MAX_ENDPOINTS);
BPF_F_TABLE("lpm_trie", struct ipcache_key, struct ipcache_val, ipcache, CTL_IPCACHE_SIZE, BPF_F_NO_PREALLOC);
BPF_F_TABLE("lpm_trie", struct policy_key, struct policy_val, policy, CTL_POLICY_SIZE, BPF_F_NO_PREALLOC);
/* Connection maps fill with closed connections' entries that only eviction removes. Per-CPU LRU lists: with the
 * common list a full map under load evicts entries another CPU has just made (kernel/bpf/bpf_lru_list.c steals
 * from other CPUs' pending lists), e.g. a SYN's entry before its SYN-ACK returns. */
#define CTL_CT_FLAGS BPF_F_NO_COMMON_LRU
BPF_F_TABLE("lru_hash", struct ct_key, struct ct_entry, conntrack, CTL_CT_SIZE, CTL_CT_FLAGS);
BPF_TABLE("lru_hash", struct frag_key, struct frag_ports, fragments, 8192);
#define CTL_LB_SERVICES_SIZE 262144   /* (services + their backend slots) x 2 revision slots */
#define CTL_LB_BACKENDS_SIZE 131072
BPF_HASH(lb_services, struct lb_svc_key, struct lb_svc_val, CTL_LB_SERVICES_SIZE);
BPF_HASH(lb_backends, __u32, struct lb_backend, CTL_LB_BACKENDS_SIZE);
BPF_F_TABLE("lru_hash", struct lb_conn_key, struct lb_conn, lb_conns, CTL_CT_SIZE, CTL_CT_FLAGS);
BPF_TABLE("lru_hash", struct lb_affinity_key, struct lb_affinity_val, lb_affinity, 65536);
BPF_F_TABLE("lru_hash", struct lb_snat_key, struct lb_snat_val, lb_snat, CTL_CT_SIZE, CTL_CT_FLAGS); /* nodeport.h */
BPF_RINGBUF_OUTPUT(events, 1024);        /* 4 MiB */
BPF_PERCPU_ARRAY(events_lost, __u64, 1);
/* connections tracked, by CTL_DIR_* of the endpoint that saw them first (the agent's CPU budget is per new one) */
BPF_PERCPU_ARRAY(ct_created, __u64, 4);
/* drops by (reason << 2 | direction): counted even when their event is lost, like Cilium's metrics map */
BPF_PERCPU_ARRAY(drop_stats, struct drop_count, 1024);

#endif
