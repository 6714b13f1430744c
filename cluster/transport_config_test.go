package cluster

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// nullStream is a StreamLayer that never connects: the test only asks the
// transport whether it would pipeline.
type nullStream struct{ net.Listener }

func (nullStream) Dial(raft.ServerAddress, time.Duration) (net.Conn, error) {
	return nil, errors.New("no network in this test")
}

// The Raft transport must not pipeline replication: hashicorp/raft's
// pipeline can deadlock (see transportConfig), and a pipeline it is never
// given cannot.
func TestRaftTransportDoesNotPipeline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransportWithConfig(transportConfig(nullStream{ln}, hclog.NewNullLogger()))
	defer trans.Close()
	if _, err := trans.AppendEntriesPipeline("n2", "127.0.0.1:1"); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v, want %v", err, raft.ErrPipelineReplicationNotSupported)
	}
}
