package admin

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// Replication is a replicating gateway's part of the endpoint (package
// replica): the /replication/ requests a peer gateway makes, and the
// replication metrics. admin knows it only through this interface.
type Replication interface {
	http.Handler
	Collector() prometheus.Collector
}

// SetReplication serves r under /replication/ and adds its metrics to
// /metrics. Call it once, before serving.
func (s *Server) SetReplication(r Replication) error {
	if err := s.registry.Register(r.Collector()); err != nil {
		return fmt.Errorf("replication metrics: %w", err)
	}
	s.mux.Handle("/replication/", r)
	return nil
}
