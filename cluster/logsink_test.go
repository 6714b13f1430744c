package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestRaftLogFormats: Raft's values formatted with hclog.Fmt reach slog
// formatted ("initial configuration" servers=[{Suffrage:Voter ...}], not
// servers="[%+v [...]]").
func TestRaftLogFormats(t *testing.T) {
	var buf bytes.Buffer
	l := raftLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	l.Info("initial configuration", "index", 1, "servers", hclog.Fmt("%+v", []struct{ ID string }{{"a"}}))
	if got := buf.String(); !strings.Contains(got, "servers=[{ID:a}]") || strings.Contains(got, "%+v") {
		t.Fatalf("logged %q", got)
	}
}
