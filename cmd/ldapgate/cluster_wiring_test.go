package main

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/ldapgate/ldapgate/store"
)

// loneDataDir is a lone gateway's data folder with one record journaled.
func loneDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	j, err := store.Open(journalDir(dir), store.Options{KeyFile: journalKeyFile(dir), HousekeepingInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Prepare(context.Background(), &store.Record{Kind: store.KindAccount, Op: store.OpModify,
		DN: "uid=a,ou=people,dc=example,dc=com", Secret: []byte("pw")}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func loopbackAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ln.Addr().String())
		ln.Close()
	}
	return out
}

// A lone gateway's journal is converted only by a start that can make it
// the cluster's state: the gateway alone in its peer list. A start with
// other peers, joining, or as a witness is refused before the conversion,
// so that the gateway can still be started alone as it was (a converted
// journal refuses a lone start).
func TestLoneJournalConvertedOnlyAlone(t *testing.T) {
	addrs := loopbackAddrs(t, 2)
	log := slog.New(slog.DiscardHandler)
	cases := []struct {
		name    string
		peers   []string
		witness bool
	}{
		{"with another peer", []string{"a@" + addrs[0], "b@" + addrs[1]}, false},
		{"joining", []string{"b@" + addrs[1]}, false},
		{"as a witness", []string{"a@" + addrs[0], "b@" + addrs[1]}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := loneDataDir(t)
			cfg := defaultConfig()
			cfg.DataDir = dir
			cfg.Cluster = ClusterConfig{NodeID: "a", Listen: addrs[0], Peers: tc.peers}
			opts := cfg.journalOptions(log)
			if tc.witness {
				opts.KeyFile = ""
			}
			j, node, err := startNode(cfg, opts, tc.witness, log)
			if err == nil {
				node.stop()
				j.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), "lone gateway") {
				t.Fatalf("refusal does not say why: %v", err)
			}
			// Still a lone gateway's journal.
			lone, err := store.Open(journalDir(dir), store.Options{KeyFile: journalKeyFile(dir), HousekeepingInterval: -1, Logger: log})
			if err != nil {
				t.Fatalf("the lone gateway cannot start again: %v", err)
			}
			lone.Close()
		})
	}

	// Alone in its list: converted, and the cluster's state.
	dir := loneDataDir(t)
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.Cluster = ClusterConfig{NodeID: "a", Listen: addrs[0], Peers: []string{"a@" + addrs[0]}}
	j, node, err := startNode(cfg, cfg.journalOptions(log), false, log)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	defer node.stop()
	if recs, err := j.Prepared(); err != nil || len(recs) != 1 {
		t.Fatalf("converted journal: %d records, %v", len(recs), err)
	}
}

// Without an op time-out a write may wait for the directory without
// bound, so the default orphan age (the op time-out plus a minute: one
// minute) would settle a write still under way: a cluster node then needs
// an orphan age of its own.
func TestOrphanAgeWithoutOpTimeout(t *testing.T) {
	node := []string{"--upstream", "ldap://127.0.0.1:389", "--node-id", "a", "--cluster-listen", "127.0.0.1:7001",
		"--cluster-peer", "a@127.0.0.1:7001", "--op-timeout", "0"}
	if _, err := runConfig(t, node...); err == nil || !strings.Contains(err.Error(), "--cluster-orphan-age") {
		t.Fatalf("a cluster node without an op time-out nor an orphan age: %v", err)
	}
	if _, err := runConfig(t, append(node, "--cluster-orphan-age", "1h")...); err != nil {
		t.Fatalf("with an orphan age: %v", err)
	}
	if _, err := runConfig(t, "--upstream", "ldap://127.0.0.1:389", "--op-timeout", "0"); err != nil {
		t.Fatalf("a lone gateway without an op time-out: %v", err)
	}
}
