package cluster

// Isolate cuts node n off the network, as a partition would (on), or
// connects it again: its cluster port refuses connections, it dials none,
// and every connection it has is closed.
func Isolate(n *Node, on bool) { n.mux.isolate(on) }
