"""Services (kube-proxy's job, done by the datapath): the pure model and the node's store."""
