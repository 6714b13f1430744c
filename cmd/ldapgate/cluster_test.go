package main

import (
	"strings"
	"testing"
	"time"
)

// The cluster's settings are checked before anything starts: a node that
// would run unauthenticated on a network, fence too short for its Axigen
// commands, or settle writes still under way is refused with the setting
// named.
func TestClusterSettingsAreChecked(t *testing.T) {
	base := []string{"--upstream", "ldap://127.0.0.1:389"}
	peers := []string{"--cluster-peer", "a@127.0.0.1:7001", "--cluster-peer", "b@127.0.0.1:7002", "--cluster-peer", "c@127.0.0.1:7003"}
	node := append([]string{"--node-id", "a", "--cluster-listen", "127.0.0.1:7001"}, peers...)
	cases := []struct {
		name string
		args []string
		want string // "" accepted; else a part of the error
	}{
		{"alone", nil, ""},
		{"three on loopback", node, ""},
		{"joining: not in its own list", append([]string{"--node-id", "d", "--cluster-listen", "127.0.0.1:7004"}, peers...), ""},
		{"peers without a node id", peers, "--node-id"},
		{"node id without peers", []string{"--node-id", "a", "--cluster-listen", "127.0.0.1:7001"}, "--cluster-peer"},
		{"peers without a cluster port", append([]string{"--node-id", "a"}, peers...), "--cluster-listen"},
		{"a peer without its address", append(append([]string{}, node...), "--cluster-peer", "d"), "ID@HOST:PORT"},
		{"a peer without a port", append(append([]string{}, node...), "--cluster-peer", "d@127.0.0.1"), "peer d"},
		{"a peer listed twice", append(append([]string{}, node...), "--cluster-peer", "b@127.0.0.1:7009"), "twice"},
		{"a network address without TLS", append(append([]string{}, node...), "--cluster-peer", "d@10.0.0.4:7001"), "mutual TLS"},
		{"a network listener without TLS", append([]string{"--node-id", "a", "--cluster-listen", "0.0.0.0:7001"}, peers...), "mutual TLS"},
		{"half the TLS settings", append(append([]string{}, node...), "--cluster-tls-cert", "a.pem"), "all three"},
		{"a fence shorter than the lease and a command", append(append([]string{}, node...), "--cluster-fence-delay", "2s"), "--cluster-fence-delay"},
		{"a fence that covers them", append(append([]string{}, node...), "--cluster-fence-delay", "2s", "--axigen-command-timeout", "1s"), ""},
		{"an orphan age inside the op time-out", append(append([]string{}, node...), "--cluster-orphan-age", "1m"), "--cluster-orphan-age"},
		{"a negative fence", append(append([]string{}, node...), "--cluster-fence-delay", "-1s"), "negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := runConfig(t, append(append([]string{}, base...), tc.args...)...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted; want an error naming %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
			if err == nil && tc.want == "" && len(tc.args) > 0 && !cfg.Cluster.enabled() {
				t.Fatal("the cluster settings were not kept")
			}
		})
	}
}

// The default fence covers the leader lease and one Axigen command.
func TestDefaultFenceDelay(t *testing.T) {
	cfg := defaultConfig()
	cfg.Mirror.Axigen.CommandTimeout = 7 * time.Second
	if got, want := defaultFenceDelay(cfg), 7*time.Second+leaderLease; got != want {
		t.Fatalf("default fence delay %s, want %s", got, want)
	}
}
