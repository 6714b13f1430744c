package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/gateway/subtree"
	"github.com/ldapgate/ldapgate/store"
)

// newSubtree starts the gateway's own read-only subtree (cn=changelog,
// cn=monitor) and returns the relay's routing to it, readable by the
// sessions allow accepts, and the function that stops it. stats and health
// are called only while serving, so stats may read a Server created after
// this call; health and clusterState (a clustered gateway's node) may be
// nil. timeLimit caps each search (0: no cap).
func newSubtree(j *store.Journal, stats func() gateway.Stats, health func() []gateway.UpstreamHealth,
	clusterState func() map[string][]string, allow func(gateway.SessionInfo) bool, timeLimit time.Duration,
	log *slog.Logger) (gateway.LocalDirectory, func(), error) {
	if timeLimit == 0 {
		timeLimit = -1 // the setting's 0 is no limit; the subtree's, its default
	}
	srv, err := subtree.New(subtree.Config{Journal: j, GatewayStats: stats, UpstreamHealth: health,
		Cluster: clusterState, SearchTimeLimit: timeLimit, Logger: log})
	if err != nil {
		return gateway.LocalDirectory{}, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		return gateway.LocalDirectory{}, nil, fmt.Errorf("start the gateway's own subtree: %w", err)
	}
	stop := func() {
		if err := srv.Close(); err != nil {
			log.Warn("stopping the gateway's own subtree", "err", err)
		}
	}
	return gateway.LocalDirectory{Suffixes: subtree.Suffixes(), Dial: srv.Dial, Allow: allow}, stop, nil
}
