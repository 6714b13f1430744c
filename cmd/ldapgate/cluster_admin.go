package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ldapgate/ldapgate/admin"
	"github.com/ldapgate/ldapgate/cluster"
)

// clusterAdmin shows a cluster node on the admin endpoint.
type clusterAdmin struct{ node *cluster.Node }

var _ admin.Cluster = clusterAdmin{}

func (c clusterAdmin) Status(ctx context.Context) (any, error) { return c.node.Status(ctx) }

func (c clusterAdmin) AddVoter(ctx context.Context, id, addr string) error {
	return c.node.AddVoter(ctx, id, addr)
}

func (c clusterAdmin) RemoveServer(ctx context.Context, id string) error {
	return c.node.RemoveServer(ctx, id)
}

func (c clusterAdmin) Collector() prometheus.Collector { return newClusterCollector(c.node) }

// clusterCollector reads the node's state at scrape time.
type clusterCollector struct {
	node *cluster.Node

	role, term, commit, applied, leader, delivering *prometheus.Desc
	nodeApplied, nodeLag, nodeUp                    *prometheus.Desc
}

func newClusterCollector(n *cluster.Node) *clusterCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &clusterCollector{
		node:        n,
		role:        d("ldapgate_cluster_role", "1 for the role this node has now (leader, follower, candidate, shutdown).", "role"),
		term:        d("ldapgate_cluster_term", "The node's current Raft term."),
		commit:      d("ldapgate_cluster_commit_index", "The index of the last log entry a quorum stored, as this node knows it."),
		applied:     d("ldapgate_cluster_applied_index", "The index of the last log entry this node applied to its journal."),
		leader:      d("ldapgate_cluster_leader_known", "1 when this node knows a leader (the cluster has a quorum), 0 otherwise."),
		delivering:  d("ldapgate_cluster_delivering", "1 while this node delivers to Axigen (it leads and its fence delay is over)."),
		nodeApplied: d("ldapgate_cluster_node_applied_index", "Each node's applied index, as this node last read it.", "node"),
		nodeLag:     d("ldapgate_cluster_node_lag_entries", "How many log entries each node's journal is behind this node's commit index.", "node"),
		nodeUp:      d("ldapgate_cluster_node_reachable", "1 when this node could read the node's state, 0 otherwise.", "node"),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.role, c.term, c.commit, c.applied, c.leader, c.delivering, c.nodeApplied, c.nodeLag, c.nodeUp} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.node.Status(ctx)
	if err != nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, r := range []string{"leader", "follower", "candidate", "shutdown"} {
		gauge(c.role, boolValue(strings.EqualFold(st.Role, r)), r)
	}
	gauge(c.term, float64(st.Term))
	gauge(c.commit, float64(st.CommitIndex))
	gauge(c.applied, float64(st.AppliedIndex))
	gauge(c.leader, boolValue(st.LeaderID != ""))
	gauge(c.delivering, boolValue(st.Fence.Delivering))
	for _, n := range st.Servers {
		gauge(c.nodeUp, boolValue(n.Reachable), n.ID)
		if n.Reachable {
			gauge(c.nodeApplied, float64(n.AppliedIndex), n.ID)
			gauge(c.nodeLag, float64(n.Lag), n.ID)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// monitor is the node's state for cn=cluster,cn=ldapgate,cn=monitor; nil
// for a lone gateway.
func (c *clusterNode) monitor() func() map[string][]string {
	if c == nil {
		return nil
	}
	return func() map[string][]string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := c.node.Status(ctx)
		if err != nil {
			return map[string][]string{"lastError": {"cluster status unavailable: " + err.Error()}}
		}
		u := func(v uint64) []string { return []string{strconv.FormatUint(v, 10)} }
		out := map[string][]string{
			"nodeID":       {st.ID},
			"role":         {strings.ToLower(st.Role)},
			"term":         u(st.Term),
			"commitIndex":  u(st.CommitIndex),
			"appliedIndex": u(st.AppliedIndex),
			"leader":       {st.LeaderID},
			"delivering":   {strconv.FormatBool(st.Fence.Delivering)},
			"deliveryTerm": u(st.Fence.JournalTerm),
		}
		for _, n := range st.Servers {
			v := fmt.Sprintf("%s %s applied=%d lag=%d", n.ID, n.Addr, n.AppliedIndex, n.Lag)
			if !n.Reachable {
				v = fmt.Sprintf("%s %s unreachable: %s", n.ID, n.Addr, n.Error)
			}
			out["node"] = append(out["node"], v)
		}
		return out
	}
}
