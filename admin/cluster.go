package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// Cluster is a clustered gateway's node as the endpoint sees it: admin
// knows it only through this interface (package cluster stays apart).
type Cluster interface {
	// Status is the cluster as this node sees it, as JSON.
	Status(ctx context.Context) (any, error)
	AddVoter(ctx context.Context, id, addr string) error
	RemoveServer(ctx context.Context, id string) error
	// Collector exports the node's role, term, indexes, lag and fence.
	Collector() prometheus.Collector
}

// ClusterChange is the body of a membership change request.
type ClusterChange struct {
	ID   string `json:"id"`
	Addr string `json:"addr,omitempty"`
}

// SetCluster serves c's status and membership changes on the admin socket
// (/cluster/...) and adds its metrics to /metrics. Call it once, before
// serving.
func (s *Server) SetCluster(c Cluster) error {
	if err := s.registry.Register(c.Collector()); err != nil {
		return fmt.Errorf("cluster metrics: %w", err)
	}
	s.mux.HandleFunc("GET /cluster/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := c.Status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, st)
	})
	change := func(do func(ctx context.Context, ch ClusterChange) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var ch ClusterChange
			if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&ch); err != nil || ch.ID == "" {
				http.Error(w, "a membership change needs a node ID", http.StatusBadRequest)
				return
			}
			if err := do(r.Context(), ch); err != nil {
				http.Error(w, err.Error(), http.StatusConflict)
				return
			}
			writeJSON(w, map[string]any{"id": ch.ID, "ok": true})
		}
	}
	s.mux.HandleFunc("POST /cluster/add", change(func(ctx context.Context, ch ClusterChange) error {
		if ch.Addr == "" {
			return fmt.Errorf("adding %s needs its address", ch.ID)
		}
		return c.AddVoter(ctx, ch.ID, ch.Addr)
	}))
	s.mux.HandleFunc("POST /cluster/remove", change(func(ctx context.Context, ch ClusterChange) error {
		return c.RemoveServer(ctx, ch.ID)
	}))
	return nil
}
