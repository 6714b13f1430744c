package cluster

// Isolate cuts node n off the network, as a partition would (on), or
// connects it again: its cluster port refuses connections, it dials none,
// and every connection it has is closed.
func Isolate(n *Node, on bool) { n.mux.isolate(on) }

// SmallLogSegments makes the node's Raft log segments small, so that
// compacting the log drops the segments before the snapshot (raft-wal
// keeps serving entries of the segment it appends to).
func SmallLogSegments(cfg *Config) { cfg.logSegment = 16 << 10 }
